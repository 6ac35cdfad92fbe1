"""Calendar windows of owner budgets: months, and day/week/month in a named time zone."""

from datetime import datetime, timezone

import pytest

from ledger.windows import valid_window, window_bounds
from ledger.scoped import window_name
from ledger.errors import Invalid


def ms(*args, tz=timezone.utc):
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_utc_month_bounds_hold_the_ts_and_cover_february_and_december():
    assert window_bounds("month", ms(2026, 2, 14, 12)) == (ms(2026, 2, 1), ms(2026, 3, 1))
    assert window_bounds("month", ms(2026, 12, 31, 23, 59, 59)) == (ms(2026, 12, 1), ms(2027, 1, 1))
    assert window_bounds("month", ms(2026, 1, 1)) == (ms(2026, 1, 1), ms(2026, 2, 1))


def test_zoned_windows_turn_at_local_midnight_and_a_dst_day_is_23_or_25_hours():
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    start, end = window_bounds("day@Europe/Paris", ms(2026, 3, 29, 12, tz=paris))  # clocks go forward
    assert (start, end) == (ms(2026, 3, 29, tz=paris), ms(2026, 3, 30, tz=paris)) and end - start == 23 * 3_600_000
    start, end = window_bounds("day@Europe/Paris", ms(2026, 10, 25, 12, tz=paris))  # clocks go back
    assert end - start == 25 * 3_600_000
    # 23:30 UTC on 31 March is already April in Paris
    assert window_bounds("month@Europe/Paris", ms(2026, 3, 31, 23, 30))[0] == ms(2026, 4, 1, tz=paris)
    monday = ms(2026, 12, 7, tz=ZoneInfo("Asia/Tokyo"))
    assert window_bounds("week@Asia/Tokyo", monday + 1) == (monday, monday + 7 * 86_400_000)
    # the previous window, then this one again: both come back right (a small cache holds both)
    assert window_bounds("month@Europe/Paris", ms(2026, 4, 1, tz=paris) - 1)[0] == ms(2026, 3, 1, tz=paris)
    assert window_bounds("month@Europe/Paris", ms(2026, 4, 2))[0] == ms(2026, 4, 1, tz=paris)


@pytest.mark.parametrize("window, tz", [("year", None), ("hour", "Europe/Paris"), ("month", "Mars/Olympus"),
                                        ("day", "../../etc/passwd"), ("minute", None)])
def test_windows_that_do_not_exist_are_refused(window, tz):
    with pytest.raises(Invalid) as e:
        window_name(window, tz)
    assert e.value.code == "unknown_window"
    assert not valid_window(window if tz is None else f"{window}@{tz}")
