"""Errors reach the app as typed ApiError variants; observers fire and cancel."""

import time
import unittest

import kepu_mobile_ffi as k
from harness import Server, enrolled, open_client, run


class ErrorsAndObservers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.booking = cls.server.world["booking_doc"]

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_forged_pass_is_invalid_input_without_the_code_in_it(self):
        client, _ = enrolled(self.server, "teacher", want=self.booking)
        forged = self.server.world["passes"][0][:-4] + "AAAA"
        with self.assertRaises(k.ApiError.InvalidInput) as caught:
            client.scan_pupil_pass(self.booking, forged)
        self.assertNotIn(forged[5:30], str(caught.exception))

    def test_a_malformed_document_id_is_invalid_input(self):
        client, _ = enrolled(self.server, "teacher")
        with self.assertRaises(k.ApiError.InvalidInput):
            client.roster("not-a-document")

    def test_a_bad_enrollment_code_is_rejected(self):
        client, _ = open_client(self.server)
        with self.assertRaises(k.ApiError.Rejected) as caught:
            run(client.enroll("KEPU-nope"))
        self.assertEqual(caught.exception.reason, "invalid_enrollment_code")
        with self.assertRaises(k.ApiError.NotEnrolled):
            client.documents()

    def test_enrolling_twice_is_already_enrolled(self):
        client, _ = enrolled(self.server, "teacher")
        with self.assertRaises(k.ApiError.AlreadyEnrolled):
            run(client.enroll(self.server.code("teacher")))
        self.assertEqual(client.identity().role, k.Role.TEACHER)

    def test_a_refused_scan_carries_the_rule_and_the_place(self):
        w = self.server.world
        client, _ = enrolled(self.server, "pupil", w["pupils"][0], want=self.booking)
        with self.assertRaises(k.ApiError.Refused) as caught:
            client.scan_pupil_pass(self.booking, w["passes"][1])
        self.assertEqual(caught.exception.code, "not-own-pupil")
        self.assertTrue(caught.exception.path.startswith("check_in_records/"))

    def test_a_gate_clock_ten_minutes_ahead_is_clock_skew_with_the_offset(self):
        w = self.server.world
        client, _ = enrolled(self.server, "pupil", w["pupils"][0], want=self.booking)
        ahead = 600_000
        code = self.server.ask(f"gate-at {int(time.time() * 1000) + ahead}")
        with self.assertRaises(k.ApiError.ClockSkew) as caught:
            client.check_in_with_gate_code(self.booking, code)
        self.assertLess(abs(caught.exception.offset_ms - ahead), 30_000)
        receipt = client.check_in_with_gate_code(self.booking, self.server.ask("gate"))
        self.assertFalse(receipt.already_counted)

    def test_a_booking_added_but_not_synced_is_not_synced_yet(self):
        w = self.server.world
        client, _ = enrolled(self.server, "pupil", w["pupils"][0])
        client.add_document(self.booking)
        with self.assertRaises(k.ApiError.NotSyncedYet) as caught:
            client.check_in_with_gate_code(self.booking, self.server.ask("gate"))
        self.assertEqual(caught.exception.what, "booking")

    def test_a_second_open_of_a_store_is_store_in_use_until_the_first_is_gone(self):
        client, directory = enrolled(self.server, "teacher", want=self.booking)
        client.scan_pupil_pass(self.booking, self.server.world["passes"][0])
        with self.assertRaises(k.ApiError.StoreInUse):
            open_client(self.server, directory)
        del client
        again, _ = open_client(self.server, directory)
        self.assertEqual(again.roster(self.booking).arrived, 1)

    def test_a_server_that_does_not_know_the_token_is_an_auth_error_and_keeps_data(self):
        client, directory = enrolled(self.server, "teacher", want=self.booking)
        client.scan_pupil_pass(self.booking, self.server.world["passes"][3])
        del client
        other = Server()
        try:
            stranger = k.KepuClient.open(directory, other.world["url"], None)
            with self.assertRaises(k.ApiError.Auth) as caught:
                run(stranger.sync_now())
            self.assertEqual(caught.exception.reason, "invalid_token")
            self.assertIsNotNone(stranger.identity())
            self.assertFalse(stranger.sync_status().revoked)
            self.assertEqual(stranger.sync_status().pending_changes, 1)
            self.assertEqual(stranger.roster(self.booking).arrived, 1)
        finally:
            other.stop()

    def test_the_app_sets_the_version_it_reports_and_a_blank_one_is_invalid_input(self):
        client, _ = open_client(self.server)
        client.set_app_version("2.3.1")
        with self.assertRaises(k.ApiError.InvalidInput):
            client.set_app_version("  ")
        with self.assertRaises(k.ApiError.InvalidInput):
            client.set_app_version("9" * 65)

    def test_document_observer_starts_with_what_is_held_then_fires_until_cancelled(self):
        client, _ = enrolled(self.server, "teacher", want=self.booking)
        seen = []

        class Observer(k.DocumentObserver):
            def on_document_changed(self, doc_id, kind):
                seen.append((doc_id, kind))

        handle = client.observe_documents(Observer())
        # The initial value: every held document, on the observer's own thread.
        until_seen = time.monotonic() + 10
        while (self.booking, k.DocumentKind.BOOKING) not in seen:
            self.assertLess(time.monotonic(), until_seen, f"initial value: {seen}")
            time.sleep(0.02)
        time.sleep(0.2)
        seen.clear()
        client.scan_pupil_pass(self.booking, self.server.world["passes"][1])
        while not seen:
            self.assertLess(time.monotonic(), until_seen + 10, "no change heard")
            time.sleep(0.02)
        self.assertEqual(seen, [(self.booking, k.DocumentKind.BOOKING)])
        handle.cancel()
        client.scan_pupil_pass(self.booking, self.server.world["passes"][2])
        time.sleep(0.2)
        self.assertEqual(len(seen), 1)

    def test_sign_out_waits_for_unsynced_work_then_empties_the_store(self):
        client, _ = enrolled(self.server, "teacher", want=self.booking)
        client.scan_pupil_pass(self.booking, self.server.world["passes"][3])
        with self.assertRaises(k.ApiError.UnsyncedWork) as caught:
            run(client.sign_out())
        self.assertEqual(caught.exception.pending, 1)
        self.assertIsNotNone(client.identity())
        run(client.sync_now())
        run(client.sign_out())
        self.assertIsNone(client.identity())

    def test_request_booking_shows_requested(self):
        w = self.server.world
        client, _ = enrolled(self.server, "teacher")
        doc = client.request_booking(w["venue_id"], w["slot_id"], 12, w["pupils"][:2])
        self.assertEqual(client.booking(doc).status, k.BookingStatus.REQUESTED)
        report = run(client.sync_now())
        self.assertEqual(report.refused, 0)
        self.assertEqual(client.sync_status().pending_changes, 0)


if __name__ == "__main__":
    unittest.main()
