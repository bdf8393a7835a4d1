use serde_json::{json, Value};

use tf_test_support::http::{send_from, Caller, Response};
use tf_test_support::records;
use tf_test_support::server::Server;
use tf_test_support::wait::eventually;
use tf_test_support::{add_client, tf, tf_clients, tf_clients_output};

const JOB: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

/// Each row of spec §2.8: method, path, the roles allowed as the refusal lists them.
const ROLE_MATRIX: &[(&str, &str, &str)] = &[
    ("POST", "/v1/job", "admin, manager, contributor"),
    ("GET", "/v1/job?queue=q", "agent"),
    ("GET", "/v1/job/JOB", "admin, manager, contributor"),
    ("GET", "/v1/job/search", "admin, manager, contributor"),
    ("POST", "/v1/job/JOB/action", "admin, manager, contributor"),
    ("GET", "/v1/job/JOB/attachments", "agent"),
    (
        "POST",
        "/v1/job/JOB/attachments",
        "admin, manager, contributor",
    ),
    ("POST", "/v1/job/JOB/events", "agent"),
    ("GET", "/v1/job/JOB/position", "admin, manager, contributor"),
    ("POST", "/v1/result/JOB", "agent"),
    (
        "GET",
        "/v1/result/JOB",
        "admin, manager, contributor, agent",
    ),
    ("POST", "/v1/result/JOB/artifact", "agent"),
    (
        "GET",
        "/v1/result/JOB/artifact",
        "admin, manager, contributor",
    ),
    ("POST", "/v1/result/JOB/log/output", "agent"),
    ("POST", "/v1/result/JOB/log/output/batch", "agent"),
    (
        "GET",
        "/v1/result/JOB/log/output",
        "admin, manager, contributor",
    ),
    ("GET", "/v1/agents/data", "admin, manager, contributor"),
    (
        "GET",
        "/v1/agents/data/a1",
        "admin, manager, contributor, agent",
    ),
    ("POST", "/v1/agents/data/a1", "admin, manager, agent"),
    ("POST", "/v1/agents/provision_logs/a1", "agent"),
    ("POST", "/v1/agents/stop_waiting/a1", "agent"),
    ("GET", "/v1/agents/queues", "admin, manager, contributor"),
    ("POST", "/v1/agents/queues", "admin, manager, agent"),
    ("GET", "/v1/agents/images/q", "admin, manager, contributor"),
    ("POST", "/v1/agents/images", "admin, manager, agent"),
    (
        "GET",
        "/v1/queues/wait_times",
        "admin, manager, contributor",
    ),
    ("GET", "/v1/queues/q/agents", "admin, manager, contributor"),
    ("GET", "/v1/queues/q/jobs", "admin, manager, contributor"),
    (
        "GET",
        "/v1/restricted-queues",
        "admin, manager, contributor",
    ),
    (
        "GET",
        "/v1/restricted-queues/q",
        "admin, manager, contributor",
    ),
    ("POST", "/v1/restricted-queues/q", "admin, manager"),
    ("DELETE", "/v1/restricted-queues/q", "admin, manager"),
    ("GET", "/v1/client-permissions", "admin, manager"),
    ("GET", "/v1/client-permissions/someone", "admin, manager"),
    ("PUT", "/v1/client-permissions/someone", "admin, manager"),
    ("DELETE", "/v1/client-permissions/someone", "admin"),
    (
        "PUT",
        "/v1/secrets/someone/a/b",
        "contributor, manager, admin",
    ),
    (
        "DELETE",
        "/v1/secrets/someone/a/b",
        "contributor, manager, admin",
    ),
    ("POST", "/v1/oauth2/revoke", "admin"),
];

fn call(caller: &Caller, method: &str, path: &str) -> Response {
    let path = path.replace("JOB", JOB);
    let headers = [
        ("Content-Type", "application/json"),
        ("Cookie", "agent_name=a1"),
    ];
    caller.request(method, &path, &headers, b"{}")
}

fn refusal(roles: &str) -> Value {
    json!({"detail": {}, "message": format!("Specified action requires role: {roles}")})
}

#[test]
fn every_route_admits_exactly_its_roles() {
    let server = Server::start();
    let callers = [
        ("agent", server.agent()),
        ("contributor", server.client("c1", "contributor", &[])),
        ("manager", server.client("m1", "manager", &[])),
        ("admin", server.client("a1", "admin", &[])),
    ];
    for (method, path, allowed) in ROLE_MATRIX {
        for (role, caller) in &callers {
            let response = call(caller, method, path);
            let refused = response.status == 403 && response.json() == refusal(allowed);
            let admitted = allowed.split(", ").any(|r| r == *role);
            assert_eq!(
                !refused,
                admitted,
                "{role} {method} {path}: {} {}",
                response.status,
                response.text()
            );
        }
        // Anonymous callers act as contributors.
        let anonymous = call(&server, method, path);
        let refused = anonymous.status == 403 && anonymous.json() == refusal(allowed);
        assert_eq!(
            !refused,
            allowed.contains("contributor"),
            "anonymous {method} {path}"
        );
    }
    // Public routes need nobody.
    assert_eq!(server.get("/v1/").status, 200);
}

/// Signs claims with the server's own key file, to make tokens the server never issued.
fn forge(server: &Server, claims: &Value, key: Option<&[u8]>) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::Mac;
    let stored = std::fs::read(server.data_dir.join("jwt-signing.key")).unwrap();
    let key = key.unwrap_or(&stored);
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{signature}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn bad_expired_and_forged_tokens_are_refused_with_the_reference_messages() {
    let server = Server::start();
    let agent_claims = |exp: i64, iat: i64| json!({"exp": exp, "iat": iat, "sub": "access_token", "permissions": {"client_id": "x", "role": "agent"}});
    let valid = forge(&server, &agent_claims(now() + 600, now()), None);
    assert_eq!(
        server.with_token(&valid).get("/v1/job?queue=q").status,
        401,
        "valid token: only the cookie is missing"
    );

    let message = |token: &str| {
        let response = server.with_token(token).get("/v1/agents/data");
        (response.status, response.json()["message"].clone())
    };
    assert_eq!(
        message(&forge(
            &server,
            &agent_claims(now() - 60, now() - 700),
            None
        )),
        (401, json!("Token has expired"))
    );
    assert_eq!(
        message(&forge(
            &server,
            &agent_claims(now() + 900, now() + 300),
            None
        )),
        (401, json!("Token not yet valid"))
    );
    assert_eq!(
        message(&forge(
            &server,
            &agent_claims(now() + 600, now()),
            Some(b"not the key")
        )),
        (403, json!("Invalid Token signature"))
    );
    assert_eq!(
        message(&forge(&server, &json!({"iat": now(), "sub": "s"}), None)),
        (403, json!("Token missing required claim: exp"))
    );
    assert_eq!(message("garbage"), (403, json!("Unable to decode token")));
    let no_client = forge(
        &server,
        &json!({"exp": now() + 60, "iat": now(), "sub": "s", "permissions": {}}),
        None,
    );
    assert_eq!(message(&no_client), (403, json!("Invalid Token")));

    let basic = server.request(
        "GET",
        "/v1/agents/data",
        &[("Authorization", "Basic eDp5")],
        b"",
    );
    assert_eq!(
        (basic.status, basic.json()),
        (403, refusal("admin, manager, contributor"))
    );
    let empty = server.request(
        "GET",
        "/v1/agents/data",
        &[("Authorization", "Bearer ")],
        b"",
    );
    assert_eq!(
        (empty.status, empty.json()["message"].clone()),
        (401, json!("Unauthorized"))
    );
}

/// Creates the contributor `dev` and logs in as it: the token answer.
fn dev_login(server: &Server) -> Value {
    let secret = server.add_client("dev", "contributor", &[]);
    server.login("dev", &secret)
}

#[test]
fn tokens_are_issued_refreshed_and_revoked() {
    let server = Server::start();
    let admin = server.client("boss", "admin", &[]);
    let login = dev_login(&server);
    assert_eq!(login["token_type"], json!("Bearer"));
    assert_eq!(login["expires_in"], json!(600));
    let refresh_token = login["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh_token.len(), 48);

    let refresh =
        |token: &Value| server.post_json("/v1/oauth2/refresh", &json!({"refresh_token": token}));
    let refreshed = refresh(&json!(refresh_token));
    assert_eq!(refreshed.status, 200);
    let access = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        refreshed.json().get("refresh_token").is_none(),
        "refresh does not rotate"
    );
    assert_eq!(server.with_token(&access).get("/v1/job/search").status, 200);

    let unknown = refresh(&json!("x".repeat(48)));
    assert_eq!(
        (unknown.status, unknown.json()["message"].clone()),
        (400, json!("Invalid refresh token."))
    );
    assert_eq!(refresh(&json!({"$ne": null})).status, 422);

    let revoke =
        |token: &str| admin.post_json("/v1/oauth2/revoke", &json!({"refresh_token": token}));
    assert_eq!(revoke(&refresh_token).json(), json!({"status": "OK"}));
    let again = revoke(&refresh_token);
    assert_eq!(
        (again.status, again.json()["message"].clone()),
        (400, json!("Refresh token has already been revoked"))
    );
    assert_eq!(
        revoke("nope").json()["message"],
        json!("Refresh token not found")
    );
    let revoked = refresh(&json!(refresh_token));
    assert_eq!(
        (revoked.status, revoked.json()["message"].clone()),
        (400, json!("Refresh token revoked."))
    );

    let stored = records::every_byte(&server.data_dir);
    assert!(
        !stored.windows(48).any(|w| w == refresh_token.as_bytes()),
        "refresh tokens are stored hashed"
    );
}

#[test]
fn a_refresh_token_past_half_its_life_is_renewed_once_and_revoked_with_its_line() {
    let server = Server::start_with(&[
        // Long enough for each step below to fit in its window on a loaded machine.
        "--access-token-lifetime",
        "2s",
        "--refresh-token-lifetime",
        "8s",
        "--jwt-leeway",
        "0",
    ]);
    server.client("boss", "admin", &[]);
    let login = dev_login(&server);
    assert_eq!(login["expires_in"], json!(2));
    let first = login["refresh_token"].clone();
    let renew = |token: &Value| {
        server.post_json(
            "/v1/oauth2/refresh?renew=true",
            &json!({ "refresh_token": token }),
        )
    };
    let young = renew(&first);
    assert_eq!(young.status, 200);
    assert_eq!(young.json()["expires_in"], json!(2));
    assert!(
        young.json().get("refresh_token").is_none(),
        "a token in the first half of its life is kept: {}",
        young.text()
    );
    let renewed_from = |token: &Value| {
        let mut renewed = Value::Null;
        assert!(eventually(|| {
            renewed = renew(token).json()["refresh_token"].clone();
            renewed.is_string()
        }));
        renewed
    };
    let second = renewed_from(&first);
    assert_ne!(second, first);
    assert!(refreshes(&server, &second));
    // Renewed once only: a holder that lost the answer, or could not save it, gets the
    // same successor again, and nobody gets a second one.
    assert_eq!(renew(&first).json()["refresh_token"], second);
    // Without `renew` the answer stays the reference's.
    let plain = server.post_json("/v1/oauth2/refresh", &json!({ "refresh_token": first }));
    assert!(plain.json().get("refresh_token").is_none());

    // The old token is not revoked (a holder that failed to save the new one goes on),
    // but it still ends when it was due to.
    assert!(eventually(|| !refreshes(&server, &first)));
    assert_eq!(
        renew(&first).json()["message"],
        json!("Refresh token expired")
    );
    assert!(refreshes(&server, &second));

    // Revoking any token of the line revokes every one, before and after it.
    let third = renewed_from(&second);
    assert_ne!(third, second);
    let other_login = server.login("dev", "dev-secret-0123456789")["refresh_token"].clone();
    // Access tokens last two seconds here: log in afresh until one is still valid on arrival.
    let mut revoked = Value::Null;
    assert!(eventually(|| {
        let access = server.login("boss", "boss-secret-0123456789")["access_token"].clone();
        revoked = server
            .with_token(access.as_str().unwrap())
            .post_json("/v1/oauth2/revoke", &json!({ "refresh_token": second }))
            .json();
        revoked["message"] != json!("Token has expired")
    }));
    assert_eq!(revoked, json!({"status": "OK"}));
    assert_eq!(
        server
            .post_json("/v1/oauth2/refresh", &json!({ "refresh_token": third }))
            .json()["message"],
        json!("Refresh token revoked.")
    );
    assert!(
        refreshes(&server, &other_login),
        "another login is its own line"
    );
}

#[test]
fn a_refresh_token_must_outlive_two_access_tokens_and_stay_bounded() {
    // A file for a data dir: a setting wrongly accepted still ends the start, at once.
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let refused = |args: &[&str], expected: &str| {
        let mut full = vec!["serve", "--data-dir", not_a_dir.path().to_str().unwrap()];
        full.extend_from_slice(args);
        let output = tf(&full);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    // The agent refreshes only once its access token is refused, so a refresh token
    // shorter than two of those (with the leeway) would never be renewed.
    refused(
        &[
            "--access-token-lifetime",
            "1h",
            "--refresh-token-lifetime",
            "2h",
        ],
        "refresh_token_lifetime",
    );
    refused(
        &[
            "--access-token-lifetime",
            "1s",
            "--refresh-token-lifetime",
            "3s",
        ],
        "jwt_leeway",
    );
    refused(&["--refresh-token-lifetime", "11years"], "at most");
    refused(&["--access-token-lifetime", "300years"], "at most");
}

#[test]
fn token_lifetimes_must_be_whole_seconds() {
    // A file for a data dir: a setting wrongly accepted fails at once, creating nothing.
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    for lifetime in ["0s", "1500ms"] {
        let output = tf(&[
            "serve",
            "--refresh-token-lifetime",
            lifetime,
            "--data-dir",
            not_a_dir.path().to_str().unwrap(),
        ]);
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("must be a whole number of seconds"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn logins_fail_clearly_and_lock_out_after_repeated_failures() {
    let server = Server::start();
    let secret = server.add_client("dev", "contributor", &[]);
    let token = |authorization: Option<&str>| {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let response = server.request("POST", "/v1/oauth2/token", &headers, b"");
        (response.status, response.text())
    };
    assert_eq!(
        token(None),
        (401, "No authorization header specified".into())
    );
    assert_eq!(
        token(Some("Bearer x")),
        (
            401,
            "Client id and key must be specified in authorization header".into()
        )
    );
    assert_eq!(
        token(Some(&basic("ghost", "whatever-secret"))),
        (401, "Invalid client id or client key".into())
    );
    for _ in 0..5 {
        assert_eq!(token(Some(&basic("dev", "wrong-secret-0000"))).0, 401);
    }
    let locked = token(Some(&basic("dev", &secret)));
    assert_eq!(
        locked.0, 429,
        "even the right secret waits out the lock-out: {}",
        locked.1
    );
    assert!(locked.1.contains("Too many failed logins"));
}

/// `Authorization: Basic …` for a client id and secret.
fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[test]
fn a_lock_out_holds_only_the_guessing_address_and_unknown_ids_lock_alike() {
    let server = Server::start();
    let secret = "dev-secret-0123456789";
    add_client(&server.data_dir, "dev", "contributor", secret, &[]);
    let stranger = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let login = |from: std::net::Ipv4Addr, id: &str, secret: &str| {
        let authorization = basic(id, secret);
        let response = send_from(
            from,
            &server.address,
            "POST",
            "/v1/oauth2/token",
            &[("Authorization", &authorization)],
            b"",
        )
        .expect("an answer");
        (response.status, response.text())
    };
    let mut answers = Vec::new();
    for id in ["dev", "ghost"] {
        for _ in 0..6 {
            answers.push(login(stranger, id, "wrong-secret-0000"));
        }
    }
    let (known, unknown) = answers.split_at(6);
    let shape = |answers: &[(u16, String)]| -> Vec<(u16, String)> {
        answers
            .iter()
            .map(|(status, text)| (*status, text.replace("ghost", "dev")))
            .collect()
    };
    assert_eq!(
        shape(known),
        shape(unknown),
        "a stranger cannot tell known ids from unknown ones"
    );
    assert_eq!(known[5].0, 429, "the guesser is locked out: {}", known[5].1);

    let (status, text) = login(std::net::Ipv4Addr::LOCALHOST, "dev", secret);
    assert_eq!(
        status, 200,
        "the real client, elsewhere, still logs in: {text}"
    );
    assert_eq!(
        login(stranger, "dev", secret).0,
        429,
        "the guesser's address stays locked"
    );
}

#[test]
fn submissions_need_permission_for_priority_restricted_queues_and_long_reservations() {
    let server = Server::start();
    let lead = server.client(
        "lead",
        "contributor",
        &["--max-priority", "q=5", "--max-reservation", "*=30000"],
    );
    let admin = server.client("root", "admin", &[]);
    let submit = |caller: &Caller, job: Value| {
        let response = caller.post_json("/v1/job", &job);
        let message = response
            .json()
            .get("message")
            .cloned()
            .unwrap_or(Value::Null);
        (response.status, message)
    };
    assert_eq!(
        submit(&server, json!({"job_queue": "q", "job_priority": 1})),
        (
            401,
            json!("Authentication required for setting priority: 1")
        )
    );
    assert_eq!(
        submit(&lead, json!({"job_queue": "q", "job_priority": 5})).0,
        200
    );
    assert_eq!(
        submit(&lead, json!({"job_queue": "q", "job_priority": 6})),
        (
            403,
            json!("Not enough permissions to push to q with priority 6")
        )
    );
    assert_eq!(
        submit(&admin, json!({"job_queue": "q", "job_priority": 1})).0,
        403,
        "the admin role grants no priority"
    );

    let long = |seconds: Value| json!({"job_queue": "q", "reserve_data": {"timeout": seconds}});
    assert_eq!(submit(&server, long(json!("6h"))).0, 200);
    assert_eq!(
        submit(&server, long(json!("7h"))),
        (
            401,
            json!("Authentication required for setting timeout: 25200")
        )
    );
    assert_eq!(submit(&lead, long(json!(25200))).0, 200);
    assert_eq!(
        submit(&lead, long(json!(40000))),
        (
            403,
            json!("Not enough permissions to push to q with reservation timeout 40000")
        )
    );

    // Restrict queue "private" to "owner".
    server.client("owner", "contributor", &[]);
    let manager = server.client("boss", "manager", &[]);
    server.agent().post_json(
        "/v1/agents/data/dev-1",
        &json!({"queues": ["private"], "state": "waiting"}),
    );
    assert_eq!(
        manager
            .post_json(
                "/v1/restricted-queues/private",
                &json!({"client_id": "owner"})
            )
            .text(),
        "OK"
    );
    assert_eq!(
        submit(&server, json!({"job_queue": "private"})),
        (
            401,
            json!("Authentication required to push to restricted queue: private")
        )
    );
    assert_eq!(
        submit(&lead, json!({"job_queue": "private"})),
        (
            403,
            json!("Not enough permissions to push to the restricted queue: private")
        )
    );
    let owner = server.with_token(
        server.login("owner", "owner-secret-0123456789")["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        submit(&owner, json!({"job_queue": "private"})).0,
        200,
        "a new token carries the new allowed queue"
    );

    let agent = server.get("/v1/agents/data/dev-1").json();
    assert_eq!(agent["restricted_to"], json!({"private": ["owner"]}));
}

#[test]
fn restricted_queues_are_managed_by_managers() {
    let server = Server::start();
    let manager = server.client("boss", "manager", &[]);
    server.client("team", "contributor", &[]);
    let post = |queue: &str, body: Value| {
        let response = manager.post_json(&format!("/v1/restricted-queues/{queue}"), &body);
        (response.status, response.text())
    };
    assert_eq!(post("q", json!({})).0, 422);
    assert_eq!(
        post("q", json!({"client_id": ""})),
        (
            400,
            r#"{"detail":{},"message":"Error: Missing client ID."}"#.into()
        )
    );
    assert_eq!(post("q", json!({"client_id": "ghost"})).0, 404);
    let no_agent = post("q", json!({"client_id": "team"}));
    assert_eq!(no_agent.0, 404);
    assert!(no_agent
        .1
        .contains("No agent is associated with the specified queue."));

    server
        .agent()
        .post_json("/v1/agents/data/dev-1", &json!({"queues": ["q"]}));
    assert_eq!(post("q", json!({"client_id": "team"})), (200, "OK".into()));
    assert_eq!(
        post("q", json!({"client_id": "team"})),
        (200, "OK".into()),
        "idempotent"
    );
    assert_eq!(
        server.get("/v1/restricted-queues").json(),
        json!([{"queue": "q", "owners": ["team"]}])
    );
    assert_eq!(
        server.get("/v1/restricted-queues/q").json(),
        json!({"queue": "q", "owners": ["team"]})
    );
    assert_eq!(
        manager.get("/v1/client-permissions/team").json()["allowed_queues"],
        json!(["q"])
    );

    let delete = |body: Value| {
        manager.request(
            "DELETE",
            "/v1/restricted-queues/q",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(delete(json!({"client_id": "team"})).text(), "OK");
    let gone = server.get("/v1/restricted-queues/q");
    assert_eq!(
        (gone.status, gone.json()["message"].clone()),
        (404, json!("Error: Restricted queue not found."))
    );
    assert_eq!(delete(json!({"client_id": "team"})).status, 404);
    assert_eq!(
        manager.get("/v1/client-permissions/team").json()["allowed_queues"],
        json!([])
    );
}

#[test]
fn client_permissions_follow_the_role_hierarchy() {
    let server = Server::start();
    let manager = server.client("boss", "manager", &[]);
    let admin = server.client("root", "admin", &[]);
    let put = |caller: &Caller, id: &str, body: Value| {
        let response = caller.request(
            "PUT",
            &format!("/v1/client-permissions/{id}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        (response.status, response.text())
    };
    let secret = "a-long-enough-secret";
    assert_eq!(put(&manager, "new", json!({"role": "contributor"})).0, 400);
    assert_eq!(
        put(&manager, "new", json!({"client_secret": "short"})).0,
        422
    );
    assert_eq!(
        put(
            &manager,
            "new",
            json!({"client_secret": secret, "max_priority": {"q": 3}})
        ),
        (200, "Created permissions for client 'new'".into())
    );
    assert_eq!(
        put(&manager, "new", json!({"email": "dev@example.com"})),
        (200, "Updated permissions for client 'new'".into())
    );
    let shown = manager.get("/v1/client-permissions/new").json();
    assert_eq!(
        shown,
        json!({"client_id": "new", "role": "contributor", "max_priority": {"q": 3}, "email": "dev@example.com"})
    );
    assert_eq!(server.login("new", secret)["token_type"], json!("Bearer"));

    let promote = put(&manager, "new", json!({"role": "admin"}));
    assert_eq!(promote.0, 403);
    assert!(promote
        .1
        .contains("boss has insufficient permissions to assign role 'admin' to client 'new'"));
    let touch_admin = put(&manager, "root", json!({"max_priority": {"q": 1}}));
    assert!(touch_admin
        .1
        .contains("boss has insufficient permissions to modify client 'root'"));
    assert_eq!(
        put(&admin, "testflinger-admin", json!({"role": "admin"})).0,
        422
    );
    assert_eq!(
        put(&admin, "new", json!({"allowed_queues": ["q"]})).0,
        422,
        "allowed_queues only via restricted-queues"
    );

    let listed = manager.get("/v1/client-permissions").json();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c.get("client_secret_hash").is_none()));
    assert_eq!(
        manager
            .request("DELETE", "/v1/client-permissions/new", &[], b"")
            .status,
        403
    );
    assert_eq!(
        admin
            .request("DELETE", "/v1/client-permissions/new", &[], b"")
            .text(),
        "OK"
    );
    assert_eq!(
        admin
            .request("DELETE", "/v1/client-permissions/new", &[], b"")
            .status,
        404
    );
    assert_eq!(
        admin
            .request(
                "DELETE",
                "/v1/client-permissions/testflinger-admin",
                &[],
                b""
            )
            .status,
        422
    );
}

#[test]
fn secrets_reach_only_the_agent_and_are_encrypted_at_rest() {
    let server = Server::start();
    let dev = server.client("dev", "contributor", &[]);
    let put = |caller: &Caller, path: &str, body: Value| {
        caller.request(
            "PUT",
            &format!("/v1/secrets/dev/{path}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let value = "s3cr3t-value-that-must-not-leak";
    let stored = put(&dev, "lab/token", json!({"value": value}));
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert!(stored.json()["expires_at"]
        .as_str()
        .unwrap()
        .ends_with("+00:00"));
    assert_eq!(
        put(
            &dev,
            "once",
            json!({"value": "single-use", "ephemeral": true})
        )
        .json(),
        json!({"expires_at": null})
    );
    assert_eq!(put(&dev, "bad/", json!({"value": "x"})).status, 422);
    assert_eq!(put(&dev, "a//b", json!({"value": "x"})).status, 422);
    assert_eq!(
        put(
            &dev,
            "x",
            json!({"value": "x", "ephemeral": true, "expire_after": 5})
        )
        .status,
        422
    );
    assert_eq!(
        put(&server, "x", json!({"value": "x"})).json()["message"],
        json!("A login (known client_id) is required to securely storeinformation.")
    );
    let other = server.client("other", "contributor", &[]);
    assert_eq!(
        put(&other, "x", json!({"value": "x"})).json()["message"],
        json!("'dev' doesn't match authenticated client id")
    );

    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "run", "secrets": {"TOKEN": "lab/token", "ONCE": "once"}}});
    let anonymous = server.post_json("/v1/job", &job);
    assert_eq!(
        anonymous.json()["message"],
        json!("Missing client ID (user not authenticated)")
    );
    let missing = dev.post_json(
        "/v1/job",
        &json!({"job_queue": "q", "test_data": {"secrets": {"A": "z/b", "B": "a/c"}}}),
    );
    assert_eq!(
        missing.json()["message"],
        json!("Inaccessible secret paths: a/c, z/b")
    );
    let id = dev.submit(&job);
    let second = dev.submit(&job);

    let claimed = server.claim("a1", "q").unwrap();
    assert_eq!(
        claimed["test_data"]["secrets"],
        json!({"TOKEN": value, "ONCE": "single-use"})
    );
    let again = server.claim("a1", "q").unwrap();
    assert_eq!(again["job_id"], json!(second));
    assert_eq!(
        again["test_data"]["secrets"],
        json!({"TOKEN": value, "ONCE": ""}),
        "single-use secrets are read once"
    );

    let shown = dev.get(&format!("/v1/job/{id}")).text();
    assert!(
        !shown.contains(value) && shown.contains("lab/token"),
        "{shown}"
    );
    assert!(!dev.get(&format!("/v1/result/{id}")).text().contains(value));
    for file in ["tf.db", "tf.db-wal"] {
        let bytes = std::fs::read(server.data_dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{file} holds the secret in clear"
        );
    }

    let deleted = dev.request("DELETE", "/v1/secrets/dev/lab/token", &[], b"");
    assert_eq!(deleted.text(), "OK");
    assert_eq!(
        dev.post_json("/v1/job", &job).json()["message"],
        json!("Inaccessible secret paths: lab/token, once")
    );
}

#[test]
fn the_clients_command_manages_clients_on_the_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let added = tf_clients(
        data.path(),
        &[
            "add",
            "ops",
            "--role",
            "manager",
            "--max-priority",
            "*=10",
            "--allowed-queue",
            "lab",
        ],
    );
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("the generated secret")
        .to_string();
    assert!(tf_clients(data.path(), &["list"]).contains("ops\tmanager"));
    let shown: Value = serde_json::from_str(&tf_clients(data.path(), &["show", "ops"])).unwrap();
    assert_eq!(
        shown,
        json!({"client_id": "ops", "role": "manager", "max_priority": {"*": 10}, "allowed_queues": ["lab"]})
    );

    let server = Server::start_in(data.path(), &[]);
    assert_eq!(server.login("ops", &secret)["token_type"], json!("Bearer"));
    let rotated = tf_clients(data.path(), &["rotate-secret", "ops"]);
    let new_secret = rotated
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(
        server.login("ops", &new_secret)["token_type"],
        json!("Bearer")
    );

    let again = tf_clients_output(data.path(), &["add", "ops", "--role", "nobody"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("'nobody' is not one of"));
    tf_clients(data.path(), &["remove", "ops"]);
    assert!(!tf_clients(data.path(), &["list"]).contains("ops"));
}

/// `tf clients add NAME --role agent --token-file FILE` on `data_dir`; what it printed.
fn enrol_agent(data_dir: &std::path::Path, name: &str, token_file: &str) -> String {
    tf_clients(
        data_dir,
        &["add", name, "--role", "agent", "--token-file", token_file],
    )
}

/// The refresh token in a token file, as `tf agent --token-file` reads it.
fn token_in(file: impl AsRef<std::path::Path>) -> Value {
    let text = std::fs::read_to_string(file).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["refresh_token"].clone()
}

#[test]
fn the_clients_command_writes_an_agents_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("rack-1.token");
    let token_path = token_file.to_str().unwrap();
    let added = enrol_agent(data.path(), "rack-1", token_path);
    assert!(
        !added.contains("secret"),
        "the agent needs no secret: {added}"
    );
    assert!(added.contains(token_path), "{added}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = token_in(&token_file);

    let server = Server::start_in(data.path(), &[]);
    assert!(refreshes(&server, &first));
    tf_clients(
        data.path(),
        &["rotate-secret", "rack-1", "--token-file", token_path],
    );
    let second = token_in(&token_file);
    assert!(
        !refreshes(&server, &first),
        "a new secret revokes the old token"
    );
    assert!(refreshes(&server, &second));

    // A token file that cannot be written leaves no half-made client behind.
    let nowhere = data.path().join("missing-dir").join("rack-2.token");
    let failed = tf_clients_output(
        data.path(),
        &[
            "add",
            "rack-2",
            "--role",
            "agent",
            "--token-file",
            nowhere.to_str().unwrap(),
        ],
    );
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("cannot write the token file"));
    assert!(!tf_clients(data.path(), &["list"]).contains("rack-2"));
}

#[test]
fn the_clients_command_gives_an_agent_another_token_without_revoking_the_others() {
    let data = tempfile::tempdir().unwrap();
    let file = |name: &str| data.path().join(name).to_str().unwrap().to_string();
    let (first_file, second_file) = (file("rack-1.token"), file("rack-1b.token"));
    enrol_agent(data.path(), "rack-1", &first_file);
    let issued = tf_clients(
        data.path(),
        &["token", "rack-1", "--token-file", &second_file],
    );
    assert!(issued.contains(&second_file), "{issued}");
    let server = Server::start_in(data.path(), &[]);
    assert!(
        refreshes(&server, &token_in(&first_file)),
        "the first still works"
    );
    assert!(refreshes(&server, &token_in(&second_file)));

    let failure = |args: &[&str]| {
        let output = tf_clients_output(data.path(), args);
        assert!(!output.status.success(), "{args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = failure(&["token", "nobody", "--token-file", &file("x.token")]);
    assert!(missing.contains("no client nobody"), "{missing}");
    // A file that is not a token file is never overwritten.
    let precious = file("precious.txt");
    std::fs::write(&precious, "not json").unwrap();
    let refused = failure(&[
        "add",
        "rack-2",
        "--role",
        "agent",
        "--token-file",
        &precious,
    ]);
    assert!(refused.contains("not a JSON object"), "{refused}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not json");
    assert!(!tf_clients(data.path(), &["list"]).contains("rack-2"));
    // Only `tf agent` reads token files: other roles log in with their secret.
    let human = failure(&[
        "add",
        "ops",
        "--role",
        "manager",
        "--token-file",
        &file("ops.token"),
    ]);
    assert!(human.contains("--token-file is for agents"), "{human}");
    assert!(!tf_clients(data.path(), &["list"]).contains("ops"));
    tf_clients(data.path(), &["add", "ops", "--role", "manager"]);
    let rotated = failure(&["rotate-secret", "ops", "--token-file", &file("ops.token")]);
    assert!(rotated.contains("--token-file is for agents"), "{rotated}");
}

#[test]
fn the_clients_command_takes_the_token_lifetime_from_the_servers_config() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tf.yaml");
    std::fs::write(&config, "refresh_token_lifetime: 90s\n").unwrap();
    let token_file = data.path().join("rack-1.token");
    tf_clients(
        data.path(),
        &[
            "add",
            "rack-1",
            "--role",
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let lifetime = records::query(
        data.path(),
        "SELECT expires_at - issued_at FROM refresh_tokens",
    );
    assert_eq!(lifetime, "90000000");
}

#[test]
fn parallel_guesses_count_towards_the_lock_out() {
    let server = Server::start();
    let secret = server.add_client("dev", "contributor", &[]);
    let guesses: Vec<_> = (0..12)
        .map(|n| {
            let (caller, header) = (
                (*server).clone(),
                basic("dev", &format!("wrong-guess-{n:04}")),
            );
            std::thread::spawn(move || {
                caller
                    .request(
                        "POST",
                        "/v1/oauth2/token",
                        &[("Authorization", &header)],
                        b"",
                    )
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 5,
        "{statuses:?}"
    );
    let right = server.request(
        "POST",
        "/v1/oauth2/token",
        &[("Authorization", &basic("dev", &secret))],
        b"",
    );
    assert_eq!(right.status, 429);
}

#[test]
fn rotating_a_secret_revokes_the_refresh_tokens_it_gave() {
    let server = Server::start();
    let refresh_token = dev_login(&server)["refresh_token"].clone();
    tf_clients(&server.data_dir, &["rotate-secret", "dev"]);
    let refreshed = server.post_json(
        "/v1/oauth2/refresh",
        &json!({"refresh_token": refresh_token}),
    );
    assert_eq!(refreshed.json()["message"], json!("Refresh token revoked."));
    for body in [
        json!({}),
        json!({"refresh_token": ""}),
        json!({"refresh_token": 5}),
    ] {
        assert_eq!(
            server.post_json("/v1/oauth2/refresh", &body).status,
            422,
            "{body}"
        );
    }
}

/// Whether a refresh token still mints access tokens.
fn refreshes(server: &Server, refresh_token: &Value) -> bool {
    let refreshed = server.post_json(
        "/v1/oauth2/refresh",
        &json!({ "refresh_token": refresh_token }),
    );
    refreshed.status == 200
}

#[test]
fn a_secret_changed_lowered_or_deleted_through_the_api_revokes_refresh_tokens() {
    let server = Server::start();
    let admin = server.client("boss", "admin", &[]);
    let secret = "dev-secret-0123456789";
    add_client(&server.data_dir, "dev", "manager", secret, &[]);
    let put = |body: Value| {
        let response = admin.request(
            "PUT",
            "/v1/client-permissions/dev",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(response.status, 200, "{}", response.text());
    };

    let kept = server.login("dev", secret)["refresh_token"].clone();
    put(json!({"max_priority": {"q": 5}}));
    put(json!({"role": "manager"}));
    assert!(
        refreshes(&server, &kept),
        "a change of limits, or the same role again, keeps the client signed in"
    );

    put(json!({"client_secret": "a-brand-new-secret-0123"}));
    assert!(!refreshes(&server, &kept), "a new secret revokes");

    let secret = "a-brand-new-secret-0123";
    let before_demotion = server.login("dev", secret)["refresh_token"].clone();
    put(json!({"role": "contributor"}));
    assert!(
        !refreshes(&server, &before_demotion),
        "a lower role revokes"
    );

    let before_deletion = server.login("dev", secret)["refresh_token"].clone();
    let deleted = admin.request("DELETE", "/v1/client-permissions/dev", &[], b"");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(!refreshes(&server, &before_deletion), "deletion revokes");
}

#[test]
fn tokens_of_another_algorithm_are_invalid() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let server = Server::start();
    let claims = json!({"exp": now() + 60, "iat": now(), "sub": "s", "permissions": {"client_id": "x", "role": "admin"}});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let response = server.with_token(&unsigned).get("/v1/client-permissions");
    assert_eq!(
        (response.status, response.json()["message"].clone()),
        (403, json!("Invalid Token"))
    );
}

#[test]
fn secret_requests_check_owner_path_and_lifetime() {
    let server = Server::start();
    let dev = server.client("dev", "contributor", &[]);
    let delete = |caller: &Caller, path: &str| {
        let response = caller.request("DELETE", &format!("/v1/secrets/dev/{path}"), &[], b"");
        (response.status, response.json()["message"].clone())
    };
    assert_eq!(
        delete(&server, "a"),
        (
            401,
            json!("A login (known client_id) is required to securely store information.")
        )
    );
    assert_eq!(
        delete(&server.client("other", "contributor", &[]), "a").0,
        403
    );
    assert_eq!(delete(&dev, "a//b").0, 422);
    let put = |body: Value| {
        dev.request(
            "PUT",
            "/v1/secrets/dev/k",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(
        put(json!({"value": "v", "expire_after": null})).json(),
        json!({"expires_at": null})
    );
    assert_eq!(put(json!({"value": "v", "expire_after": 0})).status, 422);
    assert_eq!(put(json!({"value": ""})).status, 422);
    assert_eq!(
        put(json!({"value": "v", "expire_after": 9_300_000_000_000_i64})).status,
        422
    );
}

#[test]
fn a_short_signing_key_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("short.key");
    std::fs::write(&key, "tiny").unwrap();
    let output = tf(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--jwt-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("a key needs at least 32"));
}

#[test]
fn a_token_verified_once_is_still_checked_byte_for_byte() {
    let server = Server::start();
    let token = server.login("tf-test-agent", "test-agent-secret-0123456789")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        assert_eq!(
            server.with_token(&token).get("/v1/agents/data/x").status,
            404,
            "accepted (unknown agent)"
        );
    }
    // Change one character inside the signature.
    let at = token.len() - 5;
    let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    let refused = server.with_token(&tampered).get("/v1/agents/data/x");
    assert_eq!(
        (refused.status, refused.json()["message"].clone()),
        (403, json!("Invalid Token signature"))
    );
}

#[test]
fn the_clients_command_reports_unknown_clients() {
    let data = tempfile::tempdir().unwrap();
    for args in [
        ["show", "ghost"],
        ["remove", "ghost"],
        ["rotate-secret", "ghost"],
    ] {
        let output = tf_clients_output(data.path(), &args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("no client ghost"),
            "{args:?}"
        );
    }
    let short = data.path().join("short.secret");
    std::fs::write(&short, "too-short").unwrap();
    let output = tf_clients_output(
        data.path(),
        &[
            "add",
            "x",
            "--role",
            "agent",
            "--secret-file",
            short.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("shorter than 15 characters"));
}

#[test]
fn a_submission_sees_a_queue_restricted_or_freed_after_earlier_submissions() {
    let server = Server::start();
    let manager = server.client("boss", "manager", &[]);
    server.client("team", "contributor", &[]);
    server
        .agent()
        .post_json("/v1/agents/data/dev-1", &json!({"queues": ["q"]}));
    let anonymous_submit = || {
        server
            .post_json("/v1/job", &json!({"job_queue": "q"}))
            .status
    };
    // The restricted names are read (and kept) here, before any restriction.
    assert_eq!(anonymous_submit(), 200);

    let restricted = manager.post_json("/v1/restricted-queues/q", &json!({"client_id": "team"}));
    assert_eq!(restricted.status, 200, "{}", restricted.text());
    assert_eq!(
        anonymous_submit(),
        401,
        "the restriction must apply at once"
    );

    let freed = manager.request(
        "DELETE",
        "/v1/restricted-queues/q",
        &[("Content-Type", "application/json")],
        json!({"client_id": "team"}).to_string().as_bytes(),
    );
    assert_eq!(freed.status, 200, "{}", freed.text());
    assert_eq!(
        anonymous_submit(),
        200,
        "the freed queue must take anyone's jobs"
    );
}
