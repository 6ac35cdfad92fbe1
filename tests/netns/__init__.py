"""Multi-node tests: real nodes in Linux network namespaces with cuttable links (root only)."""
