"""`python -m throttlectl ...`"""

import sys

from throttlectl.cli import main

sys.exit(main())
