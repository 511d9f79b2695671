import sys

from rating_edge.cli import main

sys.exit(main())
