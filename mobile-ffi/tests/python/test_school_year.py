"""Against a real `kepu-server` started here: a school's year logged offline by two
teachers' phones and the mobile museum's tour tablet (sessions, a lecture, a tour stop with
pupils' passes scanned) merges into the one school log the server created, every device
shows the same year, and the bureau's report counts it."""

import json
import os
import subprocess
import time
import unittest
import urllib.request

import kepu_mobile_ffi as k
from harness import RealServer, enrolled_at, run, until

DAY = 86_400_000


class SchoolYear(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = RealServer(pupils=3)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def _wait_for_log(self, client, school=None):
        def arrived():
            run(client.sync_now())
            try:
                return client.school_year(school_id=school)
            except k.ApiError.NotSyncedYet as e:
                assert e.what == "school log", e.what
                return None

        return until("this year's school log from the server", arrived)

    def test_teachers_and_tour_staff_log_offline_and_the_report_counts_it(self):
        s = self.server
        t1, _ = enrolled_at(s, s.teachers[0])
        t2, _ = enrolled_at(s, s.teachers[1])
        tour, _ = enrolled_at(s, s.staff_user)
        # Nothing can be logged before the year's log has reached the phone.
        with self.assertRaises(k.ApiError.NotSyncedYet) as caught:
            t1.log_science_session("磁铁的秘密", 40, int(time.time() * 1000))
        self.assertEqual(caught.exception.what, "school log")
        doc = t1.school_log_doc()
        self.assertEqual(t2.school_log_doc(), doc)
        self.assertEqual(tour.school_log_doc(school_id=s.school), doc)
        before = self._wait_for_log(t1)
        self._wait_for_log(t2)
        self._wait_for_log(tour, s.school)
        self.assertEqual((before.sessions, before.lectures, before.tour_stops), (0, 0, 0))
        passes = [run(t1.fetch_pupil_pass(p)) for p in s.pupils]

        # Offline from here on.
        now = int(time.time() * 1000)
        t1.log_science_session("磁铁的秘密", 40, now - DAY)
        t2.log_science_session("水的循环", 45, now)
        t2.log_expert_lecture("院士讲航天", 90, now)
        stop = tour.add_tour_stop("学校操场", 2, now, school_id=s.school)
        self.assertFalse(tour.record_tour_attendance(stop, passes[0], school_id=s.school))
        self.assertTrue(tour.record_tour_attendance(stop, passes[0], school_id=s.school))
        self.assertFalse(tour.record_tour_attendance(stop, passes[1], school_id=s.school))
        with self.assertRaises(k.ApiError.InvalidInput):
            tour.record_tour_attendance(stop, passes[2][:-4] + "AAAA", school_id=s.school)
        with self.assertRaises(k.ApiError.InvalidInput):
            tour.log_science_session("not a teacher", 40, now)

        for c in (t1, t2, tour, t1, t2):
            run(c.sync_now())
        years = [c.school_year() for c in (t1, t2)] + [tour.school_year(school_id=s.school)]
        for y in years:
            self.assertEqual(y.doc_id, doc)
            self.assertEqual(
                (y.sessions, y.lectures, y.tour_stops, y.pupils_reached), (2, 1, 1, 2), y
            )

        # The bureau's report, read with the teacher's web login, counts the same.
        env = dict(os.environ, KEPU_LOGIN_PASSWORD="teacher-password-1")
        subprocess.run(
            [s.binary, "--data-dir", s.data_dir, "admin", "set-login",
             "--user", s.teachers[0], "--login", "teacher.one"],
            env=env, check=True, capture_output=True, timeout=60,
        )
        login = urllib.request.Request(
            s.url + "/api/session",
            data=json.dumps({"login": "teacher.one", "password": "teacher-password-1"}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(login, timeout=10) as r:
            cookie = r.headers["set-cookie"].split(";")[0]

        def reported():
            req = urllib.request.Request(
                f"{s.url}/api/reports/schools?year={years[0].year}", headers={"cookie": cookie}
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                rows = json.load(r)["rows"]
            row = next(r for r in rows if r["school_id"] == s.school)
            if (row["sessions"], row["lectures"], row["tour_stops"]) == (2, 1, 1):
                return row
            return None

        row = until("the report to count the synced school log", reported)
        self.assertEqual(row["pupils_reached"], 2)
        self.assertEqual(row["pupils"], 3)


if __name__ == "__main__":
    unittest.main()
