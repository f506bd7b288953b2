"""`python -m sandbox`: run the vendor simulators (the same as `alarm-bridge sandbox`)."""

from sandbox.server import main

raise SystemExit(main())
