import sys

from lbam.report.cli import main

sys.exit(main())
