import os
import unittest

import app


class AppTest(unittest.TestCase):
    def test_static_root_exists(self):
        self.assertTrue(os.path.isfile(os.path.join(app.ROOT, "index.html")))


if __name__ == "__main__":
    unittest.main()
