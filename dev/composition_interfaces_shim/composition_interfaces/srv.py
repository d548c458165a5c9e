"""Service types of the shim: they exist so ``launch_ros`` imports; creating one raises (see package doc)."""


class _Unavailable:
    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            f"composition_interfaces.srv.{type(self).__name__}: this is mpslam_ros' dev/test shim (dev.sh); "
            "composable node containers need the real composition_interfaces from a ROS 2 install")


class LoadNode(_Unavailable):
    class Request(_Unavailable):
        pass

    class Response(_Unavailable):
        pass


class UnloadNode(LoadNode):
    pass


class ListNodes(LoadNode):
    pass
