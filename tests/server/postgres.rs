//! The ground the server tests stand on when they run on PostgreSQL: a cluster of their
//! own, started on a free port and gone after the test (`tf_test_support::postgres`).

use std::net::TcpStream;

use tf_test_support::postgres::Postgres;

#[test]
fn a_throwaway_cluster_serves_a_database_of_its_own_and_is_gone_after_the_test() {
    let cluster = Postgres::start();
    let url = cluster.create_database("tf_harness");
    assert_eq!(
        url,
        format!("postgres://tf@127.0.0.1:{}/tf_harness", cluster.port)
    );
    cluster.sql(
        "tf_harness",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)",
    );
    assert_eq!(cluster.sql("tf_harness", "SELECT sum(x) FROM t"), "42");
    let port = cluster.port;
    drop(cluster);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster still listens after the test"
    );
}
