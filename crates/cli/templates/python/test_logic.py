import json
import pathlib
import unittest

import logic

SAMPLE = json.loads((pathlib.Path(__file__).parent / "sample-event.json").read_text())


class BodyTest(unittest.TestCase):
    def test_maps_the_changed_fields(self):
        b = logic.body(SAMPLE, ["customer.*"])
        self.assertEqual(b["account"], "acct-1001")
        self.assertEqual(b["changed"]["email"], "ada@example.com")
        self.assertNotIn("first_name", b["changed"])

    def test_drops_other_topics(self):
        self.assertIsNone(logic.body(SAMPLE, ["order.*"]))


if __name__ == "__main__":
    unittest.main()
