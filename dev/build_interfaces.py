"""Build a ROS 2 interface package (.msg/.srv files) into a Python prefix, without ament_cmake.

Dev/test-only: ``tf2_msgs`` (and ``composition_interfaces``) have no wheel on any registry used here,
while the rosidl generators and the runtime libraries of every other message package do (the `ros`
extra). This does what ``rosidl_generate_interfaces()`` does for a Python user of C typesupports:

1. ``rosidl_adapter``: .msg/.srv -> .idl; ``rosidl_generator_type_description``: type hashes (.json);
2. the generators (``c``, ``typesupport_fastrtps_c``, ``typesupport_introspection_c``,
   ``typesupport_c``, ``py``) write C/C++ sources;
3. gcc/g++ compile them into the same libraries and Python extension modules a wheel ships:
   ``PREFIX/lib/lib<pkg>__rosidl_*.so`` (found through LD_LIBRARY_PATH, which the ROS wheels'
   bootstrapper sets to PREFIX/lib), ``site-packages/<pkg>`` and ``share/<pkg>`` plus the ament index
   entries (``ros2 interface``, rosidl dependency look-ups).

    python dev/build_interfaces.py dev/interfaces/tf2_msgs [--prefix .venv]

Fails loudly (non-zero exit, the failing command and its output) on any error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

#: the C typesupports rmw_fastrtps and rclpy need (no C++: rclpy does not use it)
TYPESUPPORTS = ["rosidl_typesupport_fastrtps_c", "rosidl_typesupport_introspection_c"]


def run(cmd: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"build_interfaces: command failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}{done.stderr}")


def interface_packages(share: Path) -> list[str]:
    """Every interface package installed in the prefix (their .idl/.json are the include paths)."""
    index = share / "ament_index" / "resource_index" / "rosidl_interfaces"
    return sorted(p.name for p in index.iterdir()) if index.is_dir() else []


def dependencies(package_xml: Path) -> list[str]:
    return re.findall(r"<(?:build_)?depend>\s*(\w+)\s*</", package_xml.read_text())


def write_args(path: Path, **kwargs) -> str:
    path.write_text(json.dumps(kwargs))
    return str(path)


def build(source: Path, prefix: Path, work: Path) -> None:
    package = source.name
    # dependencies come from this Python's prefix (the ROS wheels), the build goes to `prefix`
    ros = Path(sys.prefix)
    share, include, lib = ros / "share", ros / "include", ros / "lib"
    site = Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["purelib"])
    msgs = sorted(p.relative_to(source) for p in [*(source / "msg").glob("*.msg"), *(source / "srv").glob("*.srv")])
    deps = dependencies(source / "package.xml")
    known = interface_packages(share)
    missing = [d for d in deps if d not in known]
    if missing:
        sys.exit(f"build_interfaces: {package} depends on {missing}, not installed in {prefix}")

    from rosidl_adapter import convert_to_idl
    from rosidl_generator_c import generate_c
    from rosidl_generator_py import generate_py
    from rosidl_generator_type_description import generate_type_hash
    from rosidl_typesupport_c import generate_c as generate_typesupport_c
    from rosidl_typesupport_fastrtps_c import generate_typesupport_fastrtps_c
    from rosidl_typesupport_introspection_c import generate_c as generate_introspection_c

    # 1. .msg -> .idl, type descriptions
    idl_dir = work / "idl"
    for msg in msgs:
        convert_to_idl(source, package, msg, idl_dir)
    idl_tuples = [f"{idl_dir}:{m.parent}/{m.stem}.idl" for m in msgs]
    dep_idls = [f"{d}:{f}" for d in known for f in sorted((share / d).glob("*/*.idl"))]
    td_dir = work / "type_description"
    generate_type_hash(write_args(work / "td.json", package_name=package, output_dir=str(td_dir),
                                  idl_tuples=idl_tuples, include_paths=[f"{d}:{share / d}" for d in known]))
    td_tuples = [f"{m.parent}/{m.stem}.idl:{td_dir / m.parent / (m.stem + '.json')}" for m in msgs]

    # 2. sources
    def generate(name: str, func, *extra) -> Path:
        out = work / name
        func(write_args(work / f"{name}.json", package_name=package, output_dir=str(out / package),
                        template_dir=str(share / name / "resource"), idl_tuples=idl_tuples,
                        ros_interface_dependencies=dep_idls, target_dependencies=[],
                        type_description_tuples=td_tuples), *extra)
        template = share / name / "resource" / f"{name}__visibility_control.h.in"
        if template.exists():  # what rosidl_cmake configures for each C generator
            header = out / package / "msg" / f"{name}__visibility_control.h"  # (srv code includes it too)
            header.parent.mkdir(parents=True, exist_ok=True)
            header.write_text(template.read_text().replace("@PROJECT_NAME@", package)
                              .replace("@PROJECT_NAME_UPPER@", package.upper()))
        return out

    gen_c = generate("rosidl_generator_c", generate_c)
    gen_fastrtps = generate("rosidl_typesupport_fastrtps_c", generate_typesupport_fastrtps_c)
    gen_introspection = generate("rosidl_typesupport_introspection_c", generate_introspection_c)
    gen_ts_c = generate("rosidl_typesupport_c", generate_typesupport_c, TYPESUPPORTS)
    gen_py = generate("rosidl_generator_py", generate_py, ["rosidl_typesupport_c", *TYPESUPPORTS])

    # 3. compile
    cflags = ["-O2", "-fPIC", "-shared", "-w"]
    # the wheels' headers: include/<pkg>/<pkg>/... (ament layout) and include/fastcdr/... (plain)
    includes = [f"-I{p}" for p in (gen_c, gen_fastrtps, gen_introspection)] + [f"-I{include}"] + [
        f"-I{d}" for d in sorted(include.iterdir()) if d.is_dir()]
    out_lib = prefix / "lib"
    rpath = ["-Wl,-rpath,$ORIGIN", f"-L{out_lib}", f"-L{lib}"]
    all_deps = sorted(set(deps) | transitive(deps, share))
    c_of = lambda what: [f"-l{d}__{what}" for d in all_deps]  # noqa: E731

    def so(name: str, sources: list[Path], libs: list[str], cxx: bool = False, out_dir: Path = out_lib,
           extra: list[str] = ()) -> Path:
        target = out_dir / name
        assert sources, f"no generated sources for {name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        compiler = "g++" if cxx else "gcc"
        run([compiler, *cflags, *(["-std=c++17"] if cxx else ["-std=c11"]), *includes, *extra,
             *map(str, sources), "-o", str(target), *rpath, *libs])
        return target

    lib_c = f"lib{package}__rosidl_generator_c.so"
    so(lib_c, sorted((gen_c / package).rglob("*.c")),
       [*c_of("rosidl_generator_c"), "-lrosidl_runtime_c", "-lrcutils"])
    so(f"lib{package}__rosidl_typesupport_fastrtps_c.so", sorted((gen_fastrtps / package).rglob("*.cpp")),
       [f"-l{package}__rosidl_generator_c", *c_of("rosidl_typesupport_fastrtps_c"), *c_of("rosidl_generator_c"),
        "-lrosidl_typesupport_fastrtps_c", "-lrosidl_typesupport_fastrtps_cpp", "-lfastcdr", "-lrosidl_runtime_c",
        "-lrmw", "-lrcutils"], cxx=True)
    so(f"lib{package}__rosidl_typesupport_introspection_c.so", sorted((gen_introspection / package).rglob("*.c")),
       [f"-l{package}__rosidl_generator_c", *c_of("rosidl_typesupport_introspection_c"),
        "-lrosidl_runtime_c", "-lrcutils"])
    so(f"lib{package}__rosidl_typesupport_c.so", sorted((gen_ts_c / package).rglob("*.cpp")),
       [f"-l{package}__rosidl_generator_c", *c_of("rosidl_typesupport_c"), "-lrosidl_typesupport_c",
        "-lrosidl_runtime_c", "-lrcutils"], cxx=True)
    py_includes = [f"-I{sysconfig.get_paths()['include']}", f"-I{numpy_include()}"]
    so(f"lib{package}__rosidl_generator_py.so", sorted((gen_py / package).glob("*/*_s.c")),
       [f"-l{package}__rosidl_generator_c", f"-l{package}__rosidl_typesupport_c", *c_of("rosidl_generator_py"),
        *c_of("rosidl_generator_c"), *c_of("rosidl_typesupport_c"), "-lrosidl_runtime_c", "-lrcutils"],
       extra=py_includes)
    py_pkg = site / package
    if py_pkg.exists():
        shutil.rmtree(py_pkg)
    shutil.copytree(gen_py / package, py_pkg, ignore=shutil.ignore_patterns("*.c"))
    (py_pkg / "__init__.py").touch()  # rosidl_generator_py's CMake writes this one, not the generator
    for ts in ["rosidl_typesupport_c", *TYPESUPPORTS]:
        entry = gen_py / package / f"_{package}_s.ep.{ts}.c"
        ts_lib = f"-l{package}__{ts}" if ts != "rosidl_typesupport_c" else f"-l{package}__rosidl_typesupport_c"
        so(f"{package}_s__{ts}.so", [entry], [f"-l{package}__rosidl_generator_py", f"-l{package}__rosidl_generator_c",
                                               ts_lib, "-lrosidl_runtime_c", "-lrcutils"],
           out_dir=py_pkg, extra=py_includes)

    # headers (other packages could build on this one), share and the ament index
    for gen in (gen_c, gen_fastrtps, gen_introspection):
        shutil.copytree(gen / package, prefix / "include" / package / package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.c", "*.cpp"))
    pkg_share = prefix / "share" / package
    pkg_share.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "package.xml", pkg_share / "package.xml")
    for m in msgs:
        (pkg_share / m.parent).mkdir(exist_ok=True)
        shutil.copy(source / m, pkg_share / m)
        shutil.copy(idl_dir / m.parent / f"{m.stem}.idl", pkg_share / m.parent)
        shutil.copy(td_dir / m.parent / f"{m.stem}.json", pkg_share / m.parent)
    index = prefix / "share" / "ament_index" / "resource_index"
    (index / "packages").mkdir(parents=True, exist_ok=True)
    (index / "packages" / package).write_text("")
    (index / "rosidl_interfaces").mkdir(parents=True, exist_ok=True)
    (index / "rosidl_interfaces" / package).write_text(
        "\n".join(f"{m.parent}/{m.stem}.{ext}" for m in msgs for ext in ("idl", m.suffix[1:])) + "\n")


def transitive(deps: list[str], share: Path) -> set[str]:
    """Interface packages the given ones depend on, recursively (their libraries are linked too)."""
    seen: set[str] = set()
    todo = list(deps)
    while todo:
        d = todo.pop()
        if d in seen or not (share / d / "package.xml").exists():
            continue
        seen.add(d)
        todo += [x for x in dependencies(share / d / "package.xml")
                 if (share / "ament_index" / "resource_index" / "rosidl_interfaces" / x).exists()]
    return seen


def numpy_include() -> str:
    import numpy

    return numpy.get_include()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder named after the package with package.xml, msg/*.msg and/or srv/*.srv")
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: this Python's, e.g. .venv)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"build_{args.source.name}_") as work:
        build(args.source.resolve(), args.prefix.resolve(), Path(work))
    print(f"build_interfaces: {args.source.name} installed into {args.prefix}")


if __name__ == "__main__":
    main()
