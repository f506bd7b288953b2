"""Contract tests of the sandbox simulators themselves, each served over real HTTP on port 0."""
