"""Against a real `kepu-server` started here: two teachers' phones and a venue's gate
tablet scan the same pupils offline, then sync; every device ends with the same attendance
and each pupil is counted once. A pupil checks in with the gate's rotating code."""

import time
import unittest

import kepu_mobile_ffi as k
from harness import RealServer, enrolled_at, run, until


class OfflineAttendance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = RealServer(pupils=5)
        try:
            cls._book()
        except BaseException:
            cls.server.stop()
            raise

    @classmethod
    def _book(cls):
        s = cls.server
        # The gate learns the server key and its venue document at enrollment.
        cls.gate, _ = enrolled_at(s, s.staff_user)
        ident = cls.gate.identity()
        assert ident.role == k.Role.VENUE_STAFF and ident.venue_doc, ident

        def venue_synced():
            run(cls.gate.sync_now())
            return any(
                d.doc_id == ident.venue_doc and d.kind == k.DocumentKind.VENUE
                for d in cls.gate.documents()
            )

        until("the server's venue document", venue_synced)
        start = int(time.time() * 1000) + 3_600_000
        slot = cls.gate.publish_slot(start, start + 7_200_000, 60, "after school")
        run(cls.gate.sync_now())
        # A teacher requests two bookings; the server decides them.
        cls.teacher, cls.teacher_dir = enrolled_at(s, s.teachers[0])
        cls.booking = cls.teacher.request_booking(s.venue, slot, 4, s.pupils[:4])
        cls.own_booking = cls.teacher.request_booking(s.venue, slot, 1, s.pupils[4:])

        def decided():
            run(cls.teacher.sync_now())
            return all(
                cls.teacher.booking(b).status == k.BookingStatus.CONFIRMED
                for b in (cls.booking, cls.own_booking)
            )

        until("the server's booking decision", decided)
        cls.passes = [run(cls.teacher.fetch_pupil_pass(p)) for p in s.pupils]

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_two_phones_and_a_gate_offline_count_each_pupil_once(self):
        a = self.teacher
        b, _ = enrolled_at(self.server, self.server.teachers[1], want=self.booking)
        gate = self.gate
        gate.add_document(self.booking)
        run(gate.sync_now())
        for d in (a, b, gate):
            self.assertEqual(d.roster(self.booking).arrived, 0)
        # Offline: overlapping scans on three devices.
        scans = {a: [0, 1], b: [1, 2], gate: [2, 3, 0]}
        for device, which in scans.items():
            for i in which:
                device.scan_pupil_pass(self.booking, self.passes[i])
            self.assertGreater(device.sync_status().pending_changes, 0)
        for _ in range(2):
            for device in (a, b, gate):
                report = run(device.sync_now())
                self.assertEqual(report.refused, 0)
        rosters = [d.roster(self.booking) for d in (a, b, gate)]
        for r in rosters:
            self.assertEqual(r.status, k.BookingStatus.CONFIRMED)
            self.assertEqual(r.arrived, 4)
            self.assertEqual(r.missing, [])
            self.assertEqual(sum(p.scans for p in r.pupils), 7)
            self.assertEqual(r, rosters[0])
        for d in (a, b, gate):
            self.assertEqual(d.sync_status().pending_changes, 0)

    def test_a_scan_survives_reopening_the_store_with_the_enrolled_key(self):
        client, directory = enrolled_at(self.server, self.server.teachers[1], want=self.booking)
        receipt = client.scan_pupil_pass(self.booking, self.passes[0])
        del client
        # No key passed to open: the one from enrollment, kept in the store, verifies.
        again = k.KepuClient.open(directory, self.server.url, None)
        self.assertEqual(again.identity().role, k.Role.TEACHER)
        pupil = next(
            p for p in again.roster(self.booking).pupils if p.pupil_id == receipt.pupil_id
        )
        self.assertTrue(pupil.arrived)
        again.scan_pupil_pass(self.booking, self.passes[1])

    def test_a_pupil_checks_in_with_the_gate_code(self):
        pupil_id = self.server.pupils[4]
        phone, _ = enrolled_at(self.server, pupil_id, want=self.own_booking)
        self.assertEqual(phone.identity().pupil_id, pupil_id)
        run(self.gate.certify_gate_day())
        receipt = phone.check_in_with_gate_code(self.own_booking, self.gate.gate_code())
        self.assertEqual(receipt.pupil_id, pupil_id)
        visits = phone.my_visits()
        self.assertEqual(len(visits), 1)
        self.assertEqual(visits[0].booking.status, k.BookingStatus.CONFIRMED)
        self.assertIsNotNone(visits[0].checked_in_at_ms)
        self.assertEqual(run(phone.sync_now()).refused, 0)
        self.assertEqual(phone.sync_status().pending_changes, 0)
        # The teacher sees the check-in after syncing.
        run(self.teacher.sync_now())
        roster = self.teacher.roster(self.own_booking)
        self.assertEqual(roster.arrived, 1)
        with self.assertRaises(k.ApiError.InvalidInput):
            phone.check_in_with_gate_code(self.own_booking, "KPG1.forged")


if __name__ == "__main__":
    unittest.main()
