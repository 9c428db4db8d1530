"""The Python package installed the way users install it: the commands python/README.md shows, run
as written in a fresh directory, with no package index (as on a machine without network access
to one) and another python3 first on PATH (as pyenv puts one there); then the installed package,
not the source tree, talks to a real zbroker and zworker. And the Python examples, run by their
path as their docstrings say, in the same environment.

Run by CTest (python_install); by hand: ZBROKER_BIN_DIR=build/asan/bin /usr/bin/python3 -m
unittest discover -s tests/packaging -p test_python_install.py -v"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from processes import PATIENCE, Process, binary, start_broker  # noqa: E402

SOURCE_DIR = os.environ.get("ZBROKER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PYTHON_README = os.path.join(SOURCE_DIR, "python", "README.md")
# Creating a venv and building a wheel take seconds; on a loaded 2-core machine, more.
INSTALL_TIMEOUT = 240


def documented_install_commands(path):
    """The shell lines a reader of `path` runs to install the package: the ```sh block that has
    `pip install`, or failing that the inline `pip install ...` the text names. apt-get lines
    are left out (the test cannot install Debian packages; it checks them against
    scripts/install-deps.sh instead)."""
    with open(path) as f:
        text = f.read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        if "pip install" in block:
            return [line for line in block.splitlines()
                    if line.strip() and not re.match(r"(sudo )?apt-get ", line)]
    return re.findall(r"`([^`\n]*pip install[^`\n]*)`", text)


def apt_packages(path):
    """The Debian packages the ```sh lines of `path` install with apt-get."""
    with open(path) as f:
        text = f.read()
    packages = []
    for line in re.findall(r"^(?:sudo )?apt-get install ([^#\n]*)", text, re.M):
        packages += [word for word in line.split() if not word.startswith("-")]
    return packages


def not_debians_python3(directory):
    """A directory holding a `python3` that is not Debian's, to put before /usr/bin on PATH as
    pyenv's shims are: a venv it made would see none of Debian's packages (the install then
    fails with `invalid command 'bdist_wheel'`). This one only says what it is and fails, so
    that any command using the python3 first on PATH fails the same way on every machine."""
    os.makedirs(directory)
    path = os.path.join(directory, "python3")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho \"python3 from PATH ($0), not Debian's /usr/bin/python3\" >&2\n"
                "exit 1\n")
    os.chmod(path, 0o755)
    return directory


def offline_environment(venv_bin, other_python):
    """What a user's shell on Debian 12 with pyenv would give: another python3 before Debian's
    on PATH (with the venv's bin before both, as activating the venv would), no PYTHONPATH to
    the source tree, no pip configuration, and no package index at all."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PIP_") and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=os.pathsep.join([venv_bin, other_python, "/usr/bin", "/bin"]),
               PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


class InstalledIntoAVenv(unittest.TestCase):
    def test_the_documented_commands_install_a_working_package_offline(self):
        commands = documented_install_commands(PYTHON_README)
        self.assertTrue(commands, f"{PYTHON_README} shows no `pip install` command")
        if not any(" -m venv " in command for command in commands):
            # What Debian's pip tells a user to do when it refuses the system Python (PEP 668).
            commands.insert(0, "python3 -m venv .venv")

        with tempfile.TemporaryDirectory(prefix="zbroker-venv-") as work:
            # The package as a user's checkout has it, without what an earlier build left there.
            shutil.copytree(os.path.join(SOURCE_DIR, "python"), os.path.join(work, "python"),
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            venv = os.path.join(work, ".venv")
            other_python = not_debians_python3(os.path.join(work, "other-python"))
            env = offline_environment(os.path.join(venv, "bin"), other_python)
            script = "set -ex\n" + "\n".join(commands) + "\n"
            try:
                result = subprocess.run(["/bin/bash", "-c", script], cwd=work, env=env,
                                        capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            except subprocess.TimeoutExpired as e:
                self.fail(f"the documented install took over {INSTALL_TIMEOUT} s:\n{e.stderr}")
            self.assertEqual(result.returncode, 0,
                             f"the install commands python/README.md shows failed offline:\n"
                             f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")

            # The installed copy is the one imported: not the source tree, not a PYTHONPATH.
            python = os.path.join(venv, "bin", "python")
            self.assertTrue(os.access(python, os.X_OK), f"no venv at {venv}")
            broker, endpoint = start_broker()
            worker = Process([binary("zworker"), "--broker", endpoint, "--service", "hello"])
            try:
                broker.wait_for_line(r"ready for 'hello'")
                check = textwrap.dedent(f"""\
                    import importlib.metadata, sys
                    import zbroker
                    print(zbroker.__file__)
                    print(importlib.metadata.version("zbroker"))
                    with zbroker.Client({endpoint!r}, timeout={PATIENCE}, retries=0) as client:
                        print(client.call("hello", "Hello, Server!"))
                    """)
                used = subprocess.run([python, "-c", check], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=3 * PATIENCE)
            finally:
                worker.stop()
                broker.stop()
            self.assertEqual(used.returncode, 0, used.stderr)
            where, version, reply = used.stdout.splitlines()
            self.assertTrue(where.startswith(os.path.join(venv, "lib")), where)
            self.assertIn("site-packages", where)
            self.assertEqual(version, "0.1.0")
            self.assertEqual(reply, "Hello, Client!")

    def test_the_examples_run_by_their_path_whatever_python3_is_first_on_path(self):
        # As their docstrings show: PYTHONPATH=python examples/python/NAME.py, on Debian's
        # python3 and its python3-zmq and python3-msgpack.
        examples = os.path.join(SOURCE_DIR, "examples", "python")
        with tempfile.TemporaryDirectory(prefix="zbroker-examples-") as work:
            env = offline_environment(os.path.join(work, "no-venv"),
                                      not_debians_python3(os.path.join(work, "other-python")))
            env["PYTHONPATH"] = os.path.join(SOURCE_DIR, "python")
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            broker, endpoint = start_broker()
            zworker = Process([binary("zworker"), "--broker", endpoint, "--service", "hello",
                               "--service", "stats", "--service", "echo"])
            worker = subprocess.Popen([os.path.join(examples, "worker.py"), "--broker", endpoint],
                                      env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                for service in ("hello", "stats", "echo"):
                    broker.wait_for_line(rf"ready for '{service}'")
                client = subprocess.run([os.path.join(examples, "client.py"), "--broker",
                                         endpoint, "--timeout", str(PATIENCE)], env=env,
                                        capture_output=True, text=True, timeout=4 * PATIENCE)
                self.assertEqual(client.returncode, 0, client.stderr)
                self.assertIn("hello: Hello, Client!", client.stdout)
                # The worker has the whole attempt to register: the broker holds the request.
                called = subprocess.run([binary("zclient"), "--broker", endpoint, "--timeout",
                                         str(int(PATIENCE * 1000)), "--retries", "0", "call",
                                         "textstats", '"the cat and the hat"'],
                                        capture_output=True, text=True, timeout=3 * PATIENCE)
                worker.terminate()
                _, worker_log = worker.communicate(timeout=PATIENCE)
                self.assertEqual(called.returncode, 0, called.stderr + worker_log)
                self.assertIn('"words":5', called.stdout.replace(" ", ""))
                self.assertEqual(worker.returncode, 0, worker_log)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.communicate()
                zworker.stop()
                broker.stop()

    def test_the_debian_packages_it_names_are_the_ones_install_deps_installs(self):
        named = apt_packages(PYTHON_README)
        self.assertIn("python3-venv", named)
        with open(os.path.join(SOURCE_DIR, "scripts", "install-deps.sh")) as f:
            install_deps = f.read().split()
        self.assertEqual([p for p in named if p not in install_deps], [],
                         "python/README.md names packages scripts/install-deps.sh does not install")

    def test_the_main_readme_shows_the_same_install(self):
        ours = documented_install_commands(PYTHON_README)
        with open(os.path.join(SOURCE_DIR, "README.md")) as f:
            main = f.read()
        for command in ours:
            if " -m venv " in command or "pip install" in command:
                shown = command.split("#")[0].strip()
                self.assertTrue(shown in main, f"README.md does not show `{shown}`")


if __name__ == "__main__":
    unittest.main()
