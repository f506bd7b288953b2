"""alarm-bridge test suite (unit, contract, integration, reliability, browser)."""
