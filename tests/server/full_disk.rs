use serde_json::json;

use tf_test_support::server::Server;

#[test]
fn a_full_disk_is_a_clear_507_and_keeps_what_was_acknowledged() {
    let server = Server::start_on_small_disk(1024);
    let jobs: Vec<String> = (0..20)
        .map(|_| server.submit(&json!({"job_queue": "q"})))
        .collect();
    let job = |n: u8| jobs[usize::from(n)].clone();
    let archive = |n: u8| vec![b'a' + n; 200 << 10];

    let mut stored: u8 = 0;
    let refusal = loop {
        let response = server.agent().upload(
            &format!("/v1/result/{}/artifact", job(stored)),
            "file",
            &archive(stored),
        );
        if response.status != 200 {
            break response;
        }
        stored += 1;
        assert!(stored < 20, "a 1 MiB disk cannot take 4 MiB of uploads");
    };
    assert_eq!(refusal.status, 507, "{}", refusal.text());
    assert!(refusal.json()["message"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    assert_eq!(
        server
            .get(&format!("/v1/result/{}/artifact", job(stored)))
            .status,
        204,
        "nothing partial is kept"
    );
    for n in 0..stored {
        let download = server.get(&format!("/v1/result/{}/artifact", job(n)));
        assert_eq!(
            download.body,
            archive(n),
            "acknowledged upload {n} is intact"
        );
    }

    let mut acknowledged = Vec::new();
    let refusal = loop {
        let padding = "x".repeat(8000);
        let response = server.post_json(
            "/v1/job",
            &json!({"job_queue": "q", "test_data": {"test_cmds": padding}}),
        );
        if response.status != 200 {
            break response;
        }
        acknowledged.push(response.json()["job_id"].as_str().unwrap().to_string());
        assert!(acknowledged.len() < 1000, "the disk never filled up");
    };
    assert_eq!(refusal.status, 507, "{}", refusal.text());
    for id in &acknowledged {
        assert_eq!(
            server.get(&format!("/v1/job/{id}")).status,
            200,
            "acknowledged job {id} lost"
        );
    }
    assert_eq!(server.get("/v1/").status, 200, "the server keeps answering");
}
