import sys

from wolofmrl.cli import main

sys.exit(main())
