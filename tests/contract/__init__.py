"""Contract tests: clients and simulators over real loopback HTTP."""
