//! From a DNS query's bytes to the reply's, pure: the message is parsed and built with
//! hickory-proto, the question answered by the [`Table`].

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::table::{Answer, Kind, Table};

/// Answers carry no time to live: a task asks again and sees the endpoint table as it is
/// now, not as a cache remembers it (answers must follow a change within a second).
const TTL: u32 = 0;

/// The largest UDP reply a client that says nothing of its size takes (RFC 1035).
const CLASSIC_UDP_SIZE: usize = 512;
/// The largest UDP reply sent whatever a client's EDNS offers: the size the DNS flag day
/// of 2020 settled on, which no path fragments.
const MAX_UDP_SIZE: u16 = 1232;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Send(Vec<u8>),
    /// Not a name this node answers: ask the node's resolvers, send back what they say.
    Forward,
    /// Not a DNS query (too short to carry an id to answer): ignore it.
    Drop,
}

/// How the query came: a UDP reply is bounded in size (and truncated, the client then asks
/// again over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The reply to `query` from the task at `source`.
pub fn reply(table: &Table, source: Ipv4Addr, query: &[u8], transport: Transport) -> Reply {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return error_reply(query, ResponseCode::FormErr),
    };
    if request.metadata.message_type != MessageType::Query {
        return Reply::Drop;
    }
    let mut response = response_to(&request);
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(&response, &request, transport);
    }
    let [question] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(&response, &request, transport);
    };
    let kind = match question.query_type() {
        RecordType::A => Kind::A,
        RecordType::AAAA => Kind::Aaaa,
        RecordType::PTR => Kind::Ptr,
        _ => Kind::Other,
    };
    let name = question.name();
    match table.answer(source, &name.to_ascii(), kind) {
        Answer::Forward => return Reply::Forward,
        Answer::Refused => response.metadata.response_code = ResponseCode::Refused,
        Answer::NoData => response.metadata.authoritative = true,
        Answer::Addresses(addresses) => {
            response.metadata.authoritative = true;
            for address in addresses {
                let record = Record::from_rdata(name.clone(), TTL, RData::A(A(address)));
                response.add_answer(record);
            }
        }
        Answer::Name(target) => match Name::from_ascii(format!("{target}.")) {
            Ok(target) => {
                response.metadata.authoritative = true;
                response.add_answer(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                ));
            }
            Err(_) => response.metadata.response_code = ResponseCode::ServFail,
        },
    }
    encode(&response, &request, transport)
}

/// A SERVFAIL for `query` (a forward that failed), when it carries an id.
pub fn servfail(query: &[u8]) -> Reply {
    error_reply(query, ResponseCode::ServFail)
}

/// A reply to a query with `code` and nothing else, built from the header alone (the rest
/// may not parse).
fn error_reply(query: &[u8], code: ResponseCode) -> Reply {
    let Some(id) = query.get(..2).map(|id| u16::from_be_bytes([id[0], id[1]])) else {
        return Reply::Drop;
    };
    let request = Message::from_vec(query).ok();
    let mut response = match &request {
        Some(request) => response_to(request),
        None => Message::response(id, OpCode::Query),
    };
    response.metadata.response_code = code;
    response.to_vec().map_or(Reply::Drop, Reply::Send)
}

/// A response to `request` with its id, question and flags, and no answer yet.
fn response_to(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_SIZE);
        response.set_edns(edns);
    }
    response
}

/// The response's bytes; over UDP, longer than the client takes, its question alone with
/// the truncation flag (the client asks again over TCP).
fn encode(response: &Message, request: &Message, transport: Transport) -> Reply {
    let Ok(bytes) = response.to_vec() else {
        let failed = Message::error_msg(
            response.metadata.id,
            response.metadata.op_code,
            ResponseCode::ServFail,
        );
        return failed.to_vec().map_or(Reply::Drop, Reply::Send);
    };
    let limit = match (&request.edns, transport) {
        (_, Transport::Tcp) => usize::MAX,
        (Some(edns), Transport::Udp) => usize::from(
            edns.max_payload()
                .clamp(CLASSIC_UDP_SIZE as u16, MAX_UDP_SIZE),
        ),
        (None, Transport::Udp) => CLASSIC_UDP_SIZE,
    };
    if bytes.len() <= limit {
        return Reply::Send(bytes);
    }
    response
        .truncate()
        .to_vec()
        .map_or(Reply::Drop, Reply::Send)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use swarm_api::endpoints::{NetworkEndpoints, NetworkView, ServiceEndpoint, TaskEndpoint};
    use swarm_api::spec::EndpointMode;

    use super::*;
    use hickory_proto::op::Query;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);

    /// `web` (dnsrr) with `replicas` serving tasks, the client on the same network.
    fn table(replicas: u8) -> Table {
        let mut tasks: BTreeMap<String, TaskEndpoint> = (1..=replicas)
            .map(|i| {
                let task = TaskEndpoint {
                    service_id: "s-web".into(),
                    node_id: "n1".into(),
                    vtep: None,
                    address: Ipv4Addr::new(10, 0, 0, 10 + i),
                    name: format!("web.{i}"),
                    serving: true,
                };
                (format!("t-web{i}"), task)
            })
            .collect();
        tasks.insert(
            "t-client".into(),
            TaskEndpoint {
                service_id: "s-client".into(),
                node_id: "n1".into(),
                vtep: None,
                address: Ipv4Addr::new(10, 0, 0, 2),
                name: "client.1".into(),
                serving: true,
            },
        );
        let services = [
            ("s-web", "web", EndpointMode::Dnsrr),
            ("s-client", "client", EndpointMode::Vip),
        ]
        .into_iter()
        .map(|(id, name, mode)| {
            let service = ServiceEndpoint {
                name: name.into(),
                aliases: vec![],
                mode,
                vip: None,
            };
            (id.to_owned(), service)
        })
        .collect();
        let network = NetworkEndpoints {
            id: "n".into(),
            vni: 4096,
            subnet: "10.0.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            internal: false,
            services,
            tasks,
        };
        let view = NetworkView {
            networks: [("net".to_owned(), network)].into_iter().collect(),
            mesh: Default::default(),
        };
        Table::new(
            &view,
            &[(CLIENT, super::super::table::asker("t-client"))]
                .into_iter()
                .collect(),
        )
    }

    fn query(name: &str, kind: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            message.set_edns(e);
        }
        message.to_vec().unwrap()
    }

    fn sent(reply: Reply) -> Message {
        match reply {
            Reply::Send(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_records(message: &Message) -> Vec<Ipv4Addr> {
        message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(A(address)) => Some(*address),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_known_name_is_answered_with_its_question() {
        let table = table(2);
        let response = sent(reply(
            &table,
            CLIENT,
            &query("WEB.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(response.metadata.id, 4242);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative && response.metadata.recursion_desired);
        assert_eq!(response.queries[0].name().to_ascii(), "WEB.");
        assert_eq!(
            a_records(&response),
            [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]
        );
        assert_eq!(response.answers[0].ttl, 0);

        let ptr = sent(reply(
            &table,
            CLIENT,
            &query("12.0.0.10.in-addr.arpa.", RecordType::PTR, None),
            Transport::Udp,
        ));
        match &ptr.answers[0].data {
            RData::PTR(PTR(name)) => assert_eq!(name.to_ascii(), "web.2."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_questions_get_their_codes() {
        let table = table(1);
        let aaaa = sent(reply(
            &table,
            CLIENT,
            &query("web", RecordType::AAAA, None),
            Transport::Udp,
        ));
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_eq!(
            reply(
                &table,
                CLIENT,
                &query("example.com.", RecordType::A, None),
                Transport::Udp
            ),
            Reply::Forward
        );
        let stranger = Ipv4Addr::new(172, 16, 0, 9);
        let refused = sent(reply(
            &table,
            stranger,
            &query("web.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

        let mut garbage = query("web.", RecordType::A, None);
        garbage.truncate(garbage.len() - 3);
        assert_eq!(
            sent(reply(&table, CLIENT, &garbage, Transport::Udp))
                .metadata
                .response_code,
            ResponseCode::FormErr
        );
        assert_eq!(reply(&table, CLIENT, &[7], Transport::Udp), Reply::Drop);

        let failed = sent(servfail(&query("example.com.", RecordType::A, None)));
        assert_eq!(
            (failed.metadata.id, failed.metadata.response_code),
            (4242, ResponseCode::ServFail)
        );
        assert_eq!(failed.queries.len(), 1);
    }

    #[test]
    fn a_long_udp_answer_is_truncated_and_whole_over_tcp() {
        // 60 A records (16 bytes each) pass neither 512 bytes nor 1232 minus the header.
        let big = table(80);
        let udp = sent(reply(
            &big,
            CLIENT,
            &query("web.", RecordType::A, None),
            Transport::Udp,
        ));
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let edns = sent(reply(
            &big,
            CLIENT,
            &query("web.", RecordType::A, Some(4096)),
            Transport::Udp,
        ));
        assert!(edns.metadata.truncation);
        let tcp = sent(reply(
            &big,
            CLIENT,
            &query("web.", RecordType::A, None),
            Transport::Tcp,
        ));
        assert!(!tcp.metadata.truncation);
        assert_eq!(a_records(&tcp).len(), 80);
        // 20 fit in 512 bytes.
        let small = table(20);
        let udp = sent(reply(
            &small,
            CLIENT,
            &query("web.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(a_records(&udp).len(), 20);
    }
}
