import os
import unittest
from unittest import mock

import app


class AppTest(unittest.TestCase):
    def test_static_root_exists(self):
        self.assertTrue(os.path.isfile(os.path.join(app.ROOT, "index.html")))

    def test_version_names_the_commit(self):
        with mock.patch.dict(os.environ, {"FERRY_REVISION": "81e087262c42b2c1f7a7bd5dcd0ed3e8a0c9b6c1"}):
            self.assertEqual(app.version(), "commit 81e08726")
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(app.version(), "unknown")


if __name__ == "__main__":
    unittest.main()
