"""Two teachers' phones and a gate tablet scan the same pupils offline, then sync: every
device ends with the same attendance and each pupil is counted once."""

import unittest

import kepu_mobile_ffi as k
from harness import Server, enrolled, open_client, run


class OfflineAttendance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.booking = cls.server.world["booking_doc"]
        cls.passes = cls.server.world["passes"]

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_two_phones_and_a_gate_offline_count_each_pupil_once(self):
        a, _ = enrolled(self.server, "teacher", want=self.booking)
        b, _ = enrolled(self.server, "teacher", want=self.booking)
        gate, _ = enrolled(self.server, "venue_staff", want=self.booking)
        # Offline: overlapping scans on three devices.
        scans = {a: [0, 1], b: [1, 2], gate: [2, 3, 0]}
        for device, which in scans.items():
            for i in which:
                device.scan_pupil_pass(self.booking, self.passes[i])
            self.assertGreater(device.sync_status().pending_changes, 0)
        for _ in range(2):
            for device in (a, b, gate):
                run(device.sync_now())
        rosters = [d.roster(self.booking) for d in (a, b, gate)]
        for r in rosters:
            self.assertEqual(r.arrived, 4)
            self.assertEqual(r.missing, [])
            self.assertEqual(sum(p.scans for p in r.pupils), 7)
            self.assertEqual(r, rosters[0])
        for d in (a, b, gate):
            self.assertEqual(d.sync_status().pending_changes, 0)

    def test_a_scan_survives_reopening_the_store(self):
        client, directory = enrolled(self.server, "teacher", want=self.booking)
        receipt = client.scan_pupil_pass(self.booking, self.passes[0])
        del client
        again, _ = open_client(self.server, directory)
        self.assertEqual(again.identity().role, "teacher")
        pupil = next(
            p for p in again.roster(self.booking).pupils if p.pupil_id == receipt.pupil_id
        )
        self.assertTrue(pupil.arrived)

    def test_a_pupil_checks_in_with_the_gate_code(self):
        pupil_id = self.server.world["pupils"][0]
        phone, _ = enrolled(self.server, "pupil", pupil_id, want=self.booking)
        receipt = phone.check_in_with_gate_code(self.booking, self.server.gate_code())
        self.assertEqual(receipt.pupil_id, pupil_id)
        visits = phone.my_visits()
        self.assertEqual(len(visits), 1)
        self.assertEqual(visits[0].booking.status, "confirmed")
        self.assertIsNotNone(visits[0].checked_in_at_ms)


if __name__ == "__main__":
    unittest.main()
