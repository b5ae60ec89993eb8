"""Run a Jupyter kernel inside bubblewrap: private folders, no network, own pid namespace, unprivileged uid, limits.

Inside, the kernel sees: the Python installation and .venv (read-only), the course package (read-only), a
size-bounded tmpfs HOME holding a copy of its assignment folder's non-notebook files, a size-bounded tmpfs /tmp,
its own /proc and a minimal /dev. Nothing else of the host: not the course directory, the gradebook, other
submissions or the instructor's home. The kernel talks to nbgrader over ZMQ `ipc` sockets in a tmpfs inside the
sandbox, reached from outside through /proc/PID/root; the network namespace is empty (no 127.0.0.1 services).
"""
import json
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Int, List, Unicode

HOME = "/home/learner"                  # the learner's HOME inside the sandbox (tmpfs)
RUN = "/run/jupyter"                    # the kernel's connection file and ipc sockets (tmpfs)
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
HOW_TO_GET_ONE = (
    "Autograding runs every submission inside a bubblewrap sandbox, and none is usable here: {why}.\n"
    "Get one: on Debian/Ubuntu `sudo apt-get install bubblewrap` (or `make system-packages`); on Fedora "
    "`sudo dnf install bubblewrap`; user namespaces must be enabled (`sysctl kernel.unprivileged_userns_clone=1` "
    "on older Debian kernels; inside Docker run with --privileged or a seccomp profile that allows them). "
    "macOS/Windows: grade in a Linux VM or container.\n"
    "Only for submissions you trust: UNSAFE_NO_SANDBOX=1 make autograde runs them without a sandbox.")


def parse_size(text):
    """Bytes in a size such as '512M', '4G', '1048576' (binary units)."""
    text = str(text).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 4G)") from None


def kernel_python():
    """The interpreter that runs graded kernels: this environment's Python (its .venv)."""
    return sys.executable


def package_dirs(names=("finetune_helpers",)):
    """Folders of the course packages that live outside the environment (editable installs)."""
    dirs = []
    for name in names:
        spec = find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if not Path(folder).resolve().is_relative_to(Path(sys.prefix).resolve()):
                dirs.append(str(Path(folder).resolve()))
    return dirs


class BwrapArgs:
    """Builds a bwrap command line; creates every parent folder of a mount point world-readable (0755)."""

    def __init__(self):
        self.args, self.dirs = [], {"/"}

    def parents(self, dest):
        """Create DEST's missing parent folders inside the sandbox, mode 0755."""
        for parent in reversed(Path(dest).parents):
            if str(parent) not in self.dirs:
                self.dirs.add(str(parent))
                self.args += ["--perms", "0755", "--dir", str(parent)]

    def add(self, option, *values, dest, perms=None, size=None):
        """Append OPTION VALUES DEST (e.g. --ro-bind SRC DEST) with optional --perms/--size before it."""
        self.parents(dest)
        self.args += (["--perms", perms] if perms else []) + (["--size", str(size)] if size else [])
        self.args += [option, *map(str, values), dest]
        self.dirs.add(dest)


def system_mounts(b):
    """Read-only /usr, the /bin, /lib… links or folders, the loader's /etc files, CPU topology for torch."""
    b.add("--ro-bind", "/usr", dest="/usr")
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            b.args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            b.add("--ro-bind", path, dest=str(path))
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"):
        if Path("/etc", name).exists():
            b.add("--ro-bind", f"/etc/{name}", dest=f"/etc/{name}")
    if Path("/sys/devices/system/cpu").is_dir():
        b.add("--ro-bind", "/sys/devices/system/cpu", dest="/sys/devices/system/cpu")


def python_mounts(b, extra=()):
    """Read-only: the base Python installation, the environment, the course package, EXTRA host paths."""
    paths = [sys.base_prefix, sys.prefix, *package_dirs(), *extra]
    for path in dict.fromkeys(str(Path(p).resolve()) for p in paths):
        if not path.startswith("/usr/"):
            b.add("--ro-bind", path, dest=path)


def sandbox_args(*, tmp_size, home_size, uid=None, read_only=()):
    """bwrap options shared by the kernel and the availability check (everything but files and the command)."""
    b = BwrapArgs()
    b.args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "grading", "--die-with-parent", "--new-session"]
    if uid is None:      # not root: an unprivileged user namespace, the instructor's uid mapped inside
        b.args += ["--unshare-user", "--disable-userns"]
    else:                # root: real namespaces, then setpriv drops to UID (RLIMIT_NPROC holds for it)
        b.args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    system_mounts(b)
    python_mounts(b, read_only)
    b.args += ["--proc", "/proc", "--dev", "/dev"]
    b.add("--tmpfs", dest="/dev/shm", perms="1777", size=tmp_size)  # joblib/multiprocessing semaphores
    b.add("--tmpfs", dest="/tmp", perms="1777", size=tmp_size)
    b.add("--tmpfs", dest=HOME, perms="1777", size=home_size)
    b.add("--tmpfs", dest=RUN, perms="1777", size=1 << 20)
    return b


def drop_privileges(uid):
    """Command prefix that switches to UID with no capabilities (as root), or nothing (already unprivileged)."""
    if uid is None:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--"]


def rlimits(memory, processes, uid, file_size):
    """prlimit prefix: address space MEMORY bytes, PROCESSES tasks (per uid, only with a dedicated uid), files of
    at most FILE_SIZE bytes, no core dumps."""
    args = ["prlimit", f"--as={memory}", f"--fsize={file_size}", "--core=0"]
    if uid is not None:
        args.append(f"--nproc={processes}")
    return args + ["--"]


def sandbox_uid(slot=0, owner=None):
    """A uid of its own for each parallel kernel of runner OWNER (a pid; root only), else None (user namespace)."""
    if os.geteuid() != 0:
        return None
    return 1_000_000 + ((owner or os.getpid()) % 100_000) * 64 + int(slot) % 64


def check_sandbox():
    """None when a sandboxed Python runs here; else a message saying why not and how to get a sandbox."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return HOW_TO_GET_ONE.format(why="the `bwrap` command (bubblewrap) is not installed")
    for tool in ("prlimit", *(("setpriv",) if os.geteuid() == 0 else ())):
        if shutil.which(tool) is None:
            return HOW_TO_GET_ONE.format(why=f"`{tool}` (util-linux) is missing")
    uid = sandbox_uid()
    b = sandbox_args(tmp_size=1 << 20, home_size=1 << 20, uid=uid)
    cmd = [*rlimits(1 << 30, 64, uid, 1 << 20), bwrap, *b.args, "--clearenv", *drop_privileges(uid), kernel_python(),
           "-S", "-c", "import os; print(os.getpid())"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return HOW_TO_GET_ONE.format(why=f"bwrap could not start ({exc})")
    if proc.returncode != 0 or proc.stdout.strip() != "2":
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return HOW_TO_GET_ONE.format(why=f"bwrap failed: {why}")
    return None


def assignment_files(folder, limit=500):
    """[(host path, relative path)] of the non-notebook files under FOLDER (notebooks may hold hidden tests)."""
    found = []
    for path in sorted(Path(folder).rglob("*")) if folder else []:
        rel = path.relative_to(folder)
        if path.is_file() and not path.is_symlink() and path.suffix != ".ipynb" and not any(
                part.startswith(".") or part == "__pycache__" for part in rel.parts):
            found.append((path, rel))
    if len(found) > limit:
        raise RuntimeError(f"{folder} holds {len(found)} files; the sandbox copies at most {limit}")
    return found


def read_child_pid(fd, proc, log_path, timeout=60):
    """The host pid of the sandbox's first process, from bwrap's --info-fd JSON."""
    data, deadline = b"", time.monotonic() + timeout
    while not data.rstrip().endswith(b"}"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            log = Path(log_path).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"bwrap did not start the sandbox (exit status {proc.poll()}): {log}")
        data += chunk
    return json.loads(data)["child-pid"]


class SandboxKernelManager(AsyncKernelManager):
    """An AsyncKernelManager that starts the kernel inside bubblewrap, with ipc transport and resource limits."""

    memory_limit = Unicode("8G", help="address-space limit of the kernel and each process it starts").tag(
        config=True)
    process_limit = Int(256, help="tasks (processes + threads) the kernel's uid may have").tag(config=True)
    tmp_size = Unicode("512M", help="size of the sandbox's /tmp (tmpfs)").tag(config=True)
    home_size = Unicode("512M", help="size of HOME, which holds the copy of the assignment folder").tag(
        config=True)
    threads = Int(0, help="OMP/MKL/torch threads of the kernel; 0 = all cores").tag(config=True)
    uid = Int(-1, help="uid of the kernel when grading as root (-1: one derived from the runner's pid)").tag(
        config=True)
    read_only_paths = List(Unicode(), help="extra host paths bound read-only (e.g. full-profile data)").tag(
        config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._host_dir = tempfile.mkdtemp(prefix="grading-kernel-")
        self._child_pid = None
        self._log_path = os.path.join(self._host_dir, "bwrap.log")

    async def _async_pre_start_kernel(self, **kw):
        """Use ipc transport (a placeholder path until the sandbox exists) and message-based interrupts."""
        self.transport, self.ip = "ipc", os.path.join(self._host_dir, "kernel")
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        self.kernel_spec.interrupt_mode = "message"  # signals to bwrap do not reach the kernel
        return cmd, kw

    def kernel_env(self):
        """The kernel's whole environment inside the sandbox."""
        threads = str(self.threads or os.cpu_count() or 1)
        env = {"HOME": HOME, "USER": "learner", "LOGNAME": "learner", "LANG": "C.UTF-8",
               "PATH": f"{Path(kernel_python()).parent}:/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp",
               "JPY_PARENT_PID": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "module://matplotlib_inline"
               ".backend_inline", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "OPENBLAS_NUM_THREADS": threads, "TORCH_NUM_THREADS": threads}
        for name in ("FINETUNE_PROFILE", "FINETUNE_OVERRIDES", "FINETUNE_DATA", "TORCH_HOME", "NBGRADER_EXECUTION"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def build_command(self, kernel_cmd, cwd, info_fd, fds):
        """The prlimit + bwrap + setpriv command that runs KERNEL_CMD's kernel with CWD's files copied in."""
        uid = (self.uid if self.uid >= 0 else sandbox_uid(0, os.getppid())) if os.geteuid() == 0 else None
        tmp_size, home_size = parse_size(self.tmp_size), parse_size(self.home_size)
        b = sandbox_args(tmp_size=tmp_size, home_size=home_size, uid=uid,
                         read_only=self.read_only_paths)
        info = dict(self.get_connection_info(), ip=f"{RUN}/kernel")
        info["key"] = info["key"].decode() if isinstance(info["key"], bytes) else info["key"]
        b.add("--ro-bind-data", self._data_fd(json.dumps(info).encode(), fds), dest=f"{RUN}/kernel.json",
              perms="0444")
        workdir = f"{HOME}/{Path(cwd).name}" if cwd else f"{HOME}/work"
        b.add("--dir", dest=workdir, perms="1777")
        for host, rel in assignment_files(cwd):
            fd = os.open(host, os.O_RDONLY)
            fds.append(fd)
            b.add("--file", fd, dest=f"{workdir}/{rel.as_posix()}", perms="0666")
        env = [x for k, v in self.kernel_env().items() for x in ("--setenv", k, v)]
        after_file = kernel_cmd[kernel_cmd.index("-f") + 2:] if "-f" in kernel_cmd else []
        kernel = [kernel_python(), "-m", "ipykernel_launcher", "-f", f"{RUN}/kernel.json", *after_file]
        limits = rlimits(parse_size(self.memory_limit), self.process_limit, uid, max(tmp_size, home_size))
        return [*limits, shutil.which("bwrap"), *b.args,
                "--info-fd", str(info_fd), "--clearenv", *env, "--chdir", workdir, *drop_privileges(uid), *kernel]

    @staticmethod
    def _data_fd(data, fds):
        """A readable fd holding DATA (a pipe; small data only), remembered in FDS for closing."""
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        fds.append(read)
        return read

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        """Start bwrap, learn the sandbox's pid, wait for the kernel's sockets, then lock their folder."""
        info_read, info_write = os.pipe()
        fds = [info_write]
        try:
            cmd = self.build_command(kernel_cmd, kw.pop("cwd", None), info_write, fds)
            with open(self._log_path, "wb") as log:  # bwrap's own errors; ipykernel forwards the kernel's
                kw.update(cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, pass_fds=tuple(fds),
                          stdout=subprocess.DEVNULL, stderr=log)
                await super()._async_launch_kernel(cmd, **kw)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            self._child_pid = read_child_pid(info_read, self.provisioner.process, self._log_path)
        finally:
            os.close(info_read)
        self._lock_sockets(f"/proc/{self._child_pid}/root{RUN}")
        self.ip = f"/proc/{self._child_pid}/root{RUN}/kernel"

    def _lock_sockets(self, run_dir, timeout=120):
        """Wait until the kernel has bound its five sockets, make their folder read-only, check they are sockets.

        No learner code has run yet (it runs only on execute requests), so the sockets are ipykernel's own; once
        the folder is read-only the kernel cannot swap them for links to host sockets."""
        ports = [getattr(self, name) for name in CHANNELS]
        paths = [f"{run_dir}/kernel-{port}" for port in ports]
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(p) for p in paths):
            if self.provisioner.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandboxed kernel exited or did not open its sockets in time")
            time.sleep(0.02)
        os.chmod(run_dir, 0o555)
        for path in paths:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise RuntimeError(f"{path} is not a socket")

    async def _async_cleanup_resources(self, restart=False):
        """Remove the placeholder folder as well as the connection file."""
        await super()._async_cleanup_resources(restart=restart)
        shutil.rmtree(self._host_dir, ignore_errors=True)
