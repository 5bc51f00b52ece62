import sys

from crossmodal.steps import main

if __name__ == "__main__":
    sys.exit(main())
