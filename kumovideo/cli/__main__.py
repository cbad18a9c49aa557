import sys

from kumovideo.cli import main

sys.exit(main())
