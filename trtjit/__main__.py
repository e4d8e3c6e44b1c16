import sys

from trtjit.cli import main

sys.exit(main())
