"""What users install: `cmake --install` with a CMake package an outside project builds against,
the .deb (contents, dependencies, conffiles), the config files it ships, and the C++ examples.

Run by CTest, which passes the build tree and its compiler flags in the environment."""
import glob
import os
import subprocess
import sys
import tempfile
import tomllib
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from processes import PATIENCE, START_PATIENCE, Process, binary, start_broker  # noqa: E402

SOURCE_DIR = os.environ.get("ZBROKER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BUILD_DIR = os.environ.get("ZBROKER_BUILD_DIR", os.path.join(SOURCE_DIR, "build/debug"))
CMAKE = os.environ.get("ZBROKER_CMAKE", "cmake")
CPACK = os.path.join(os.path.dirname(CMAKE), "cpack") if os.path.isabs(CMAKE) else "cpack"


def run(*args, **kwargs):
    """Runs a command; its output is in the failure message when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


class InstalledTree(unittest.TestCase):
    def test_an_outside_project_builds_against_the_installed_package_and_runs(self):
        with tempfile.TemporaryDirectory() as prefix:
            run(CMAKE, "--install", BUILD_DIR, "--prefix", prefix)
            for path in ["bin/zbroker", "bin/zworker", "bin/zclient", "bin/zbench",
                         "include/zbroker/version.hpp", "include/zbroker/worker/worker.hpp",
                         "include/zbroker/client/async_client.hpp",
                         "lib/cmake/zbroker/zbrokerConfig.cmake"]:
                self.assertTrue(os.path.exists(os.path.join(prefix, path)), path)
            self.assertFalse(os.path.exists(os.path.join(prefix, "etc")),
                             "a plain install must not write config (that is the .deb's)")

            consumer = os.path.join(prefix, "consumer-build")
            run(CMAKE, "-S", os.path.join(SOURCE_DIR, "tests/packaging/consumer"), "-B", consumer,
                "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release",
                # The same sanitizer flags as the libraries, or they would not link.
                f"-DCMAKE_CXX_FLAGS={os.environ.get('ZBROKER_CXX_FLAGS', '')}",
                f"-DCMAKE_EXE_LINKER_FLAGS={os.environ.get('ZBROKER_LINKER_FLAGS', '')}")
            run(CMAKE, "--build", consumer)

            broker = Process([os.path.join(prefix, "bin/zbroker"), "--bind", "tcp://127.0.0.1:*"])
            try:
                endpoint = broker.wait_for_line(r"listening on (tcp://\S+)",
                                                START_PATIENCE).group(1)
                out = run(os.path.join(consumer, "consumer"), endpoint)
                # The libraries log through spdlog's default logger (stdout unless set).
                self.assertRegex(out, r"(?m)^zbroker \d+\.\d+\.\d+: HI$")
            finally:
                broker.stop()


class DebianPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.TemporaryDirectory()
        run(CPACK, "-G", "DEB", "-B", cls.out.name, "--config",
            os.path.join(BUILD_DIR, "CPackConfig.cmake"))
        debs = glob.glob(os.path.join(cls.out.name, "*.deb"))
        assert len(debs) == 1, debs
        cls.deb = debs[0]

    @classmethod
    def tearDownClass(cls):
        cls.out.cleanup()

    def test_it_holds_the_programs_units_config_and_docs_but_no_headers(self):
        files = {line.split()[-1] for line in run("dpkg-deb", "-c", self.deb).splitlines()}
        for path in ["./usr/bin/zbroker", "./usr/bin/zworker", "./usr/bin/zclient",
                     "./usr/bin/zbench", "./usr/lib/systemd/system/zbroker.service",
                     "./usr/lib/systemd/system/zworker@.service", "./etc/zbroker/zbroker.conf",
                     "./etc/zbroker/worker-echo.conf", "./usr/share/doc/zbroker/operations.md"]:
            self.assertIn(path, files)
        self.assertFalse([f for f in files if f.startswith("./usr/include")])

    def test_it_depends_on_the_runtime_libraries_the_programs_link(self):
        depends = run("dpkg-deb", "-f", self.deb, "Depends")
        for package in ["libzmq5", "libprometheus-cpp-pull1.0", "libspdlog", "adduser"]:
            self.assertIn(package, depends)
        self.assertNotIn("-dev", depends)

    def test_config_is_kept_on_upgrade_and_a_system_user_is_made(self):
        with tempfile.TemporaryDirectory() as control:
            run("dpkg-deb", "-e", self.deb, control)
            with open(os.path.join(control, "conffiles")) as f:
                self.assertEqual(f.read().split(),
                                 ["/etc/zbroker/zbroker.conf", "/etc/zbroker/worker-echo.conf"])
            postinst = os.path.join(control, "postinst")
            self.assertTrue(os.access(postinst, os.X_OK))
            with open(postinst) as f:
                self.assertIn("adduser --system", f.read())

    def test_the_units_run_the_installed_programs_with_their_config(self):
        units = os.path.join(SOURCE_DIR, "packaging/systemd")
        with open(os.path.join(units, "zbroker.service")) as f:
            self.assertIn("ExecStart=/usr/bin/zbroker --config /etc/zbroker/zbroker.conf\n",
                          f.read())
        with open(os.path.join(units, "zworker@.service")) as f:
            self.assertIn("ExecStart=/usr/bin/zworker --config /etc/zbroker/worker-%i.conf\n",
                          f.read())


class ShippedConfig(unittest.TestCase):
    """The files the .deb puts in /etc are valid for the programs, flags overriding them."""

    def test_the_installed_broker_listens_on_loopback_only_until_opened(self):
        # Without CURVE, anyone who reaches the port can send requests, serve any service (and
        # so read other clients' requests) and read the counters: the default must not be
        # reachable from other hosts until an operator turns CURVE on and opens it.
        etc = os.path.join(SOURCE_DIR, "packaging/etc")
        with open(os.path.join(etc, "zbroker.conf"), "rb") as f:
            broker = tomllib.load(f)
        self.assertEqual(broker["bind"], "tcp://127.0.0.1:5555")
        self.assertNotIn("curve-secret", broker)
        with open(os.path.join(etc, "worker-echo.conf"), "rb") as f:
            worker = tomllib.load(f)
        self.assertEqual(worker["broker"], broker["bind"], "the local worker reaches it")

    def test_the_broker_and_worker_config_files_parse_and_serve(self):
        etc = os.path.join(SOURCE_DIR, "packaging/etc")
        broker, endpoint = start_broker("--config", os.path.join(etc, "zbroker.conf"))
        worker = Process([binary("zworker"), "--config", os.path.join(etc, "worker-echo.conf"),
                          "--broker", endpoint])
        try:
            broker.wait_for_line(r"ready for 'hello'")
            broker.wait_for_line(r"ready for 'echo'")
            # One patient attempt: the worker is there, so the answer comes.
            out = run(binary("zclient"), "--broker", endpoint, "--timeout",
                      str(int(PATIENCE * 1000)), "--retries", "0", "call", "echo", '"conf"')
            self.assertIn("conf", out)
        finally:
            worker.stop()
            broker.stop()


class Examples(unittest.TestCase):
    def test_the_wordfreq_worker_answers_the_wordfreq_client(self):
        broker, endpoint = start_broker()
        worker = Process([binary("wordfreq_worker"), endpoint])
        try:
            broker.wait_for_line(r"ready for 'wordfreq'")
            out = subprocess.run([binary("wordfreq_client"), endpoint, "2"],
                                 input="The cat, the dog; THE end. Dog!", capture_output=True,
                                 text=True, timeout=3 * PATIENCE)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, "3 the\n2 dog\n")
            self.assertEqual(worker.stop(), 0)  # SIGTERM: a clean stop
        finally:
            worker.stop()
            broker.stop()


if __name__ == "__main__":
    unittest.main()
