"""`python -m bench [--smoke] [--json FILE]`: see bench/README.md."""

from bench.run import main

raise SystemExit(main())
