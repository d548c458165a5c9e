"""DEV/TEST-ONLY SHIM, not the ROS 2 package: ``launch_ros`` imports ``composition_interfaces.srv`` at
import time (for composable-node containers), and that message package has no wheel. ``./dev.sh``
installs this shim into the project's .venv only, next to the upstream launch stack from
``../shared/vendor``, so that ``ros2 launch`` and launch_testing work for plain nodes (all mpslam_ros
launch files use plain nodes). Any use of the services raises; on a real ROS 2 install the real
package is present and this shim is never installed."""
