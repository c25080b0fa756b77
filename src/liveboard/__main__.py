import sys

from liveboard.cli import main

sys.exit(main())
