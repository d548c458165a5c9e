import sys

from mpslam_ros.cli import main

sys.exit(main())
