//! The school's programme year beyond museum visits.

use crate::harness::{World, now_ms, until};

stories! {
    /// Two teachers log a science session and an expert lecture on their phones; both phones and the school's report show the same year.
    async fn two_teachers_log_the_school_year_and_the_report_counts_it(backend: Backend) {
        let w = World::start(backend).await;
        let wang = w.phone(&w.teachers[0]).await;
        let li = w.phone(&w.teachers[1]).await;
        for phone in [&wang, &li] {
            // The server creates the year's log; each phone fetches it once, then works offline.
            let log = phone.school_log_doc(None, None).unwrap();
            phone.fetch(&log).await;
        }
        let now = now_ms();
        wang.log_science_session("磁铁的秘密".into(), 40, now - 3_600_000).unwrap();
        li.log_expert_lecture("走近航天".into(), 60, now - 7_200_000).unwrap();
        for phone in [&wang, &li, &wang] {
            phone.sync().await;
        }
        let year = wang.school_year(None, None).unwrap();
        assert_eq!((year.sessions, year.lectures, year.weeks_with_session), (1, 1, 1));
        assert_eq!(li.school_year(None, None).unwrap(), year);
        let teacher = w.web_login(&w.teachers[0], "teacher.wang").await;
        let row = until("the year in the report", || {
            let teacher = &teacher;
            async move {
                let report = teacher.json("/api/reports/schools").await;
                let row = report["rows"][0].clone();
                (row["sessions"] == 1 && row["lectures"] == 1).then_some(row)
            }
        })
        .await;
        assert_eq!(row["met"]["expert_lecture"], true, "{row:#}");
        assert_eq!(row["session_minutes"], 40);
    }
}
