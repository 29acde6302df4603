//! Transaction keys (RFC 3261 sections 17.1.3 and 17.2.3) and the requests the transaction
//! layer builds itself: the ACK for a non-2xx final response and, for the TU, CANCEL.

use super::TxError;
use crate::sip::headers::{header_param, split_header_list, top_via};
use crate::sip::message::{response_to, BRANCH_COOKIE};
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, Request, Response};

/// What identifies a transaction. Client keys leave `sent_by` empty: the branch we generated
/// is unique on its own. Server keys file ACK under INVITE so an ACK finds its transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TxKey {
    pub server: bool,
    pub branch: String,
    pub sent_by: String,
    pub method: String,
}

/// What ties an ACK for a 2xx to the INVITE server transaction that sent the 2xx: the ACK has
/// its own branch (RFC 3261 section 17.1.1.3), so it is matched by dialog and CSeq number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AckKey {
    pub call_id: String,
    pub cseq: u32,
    pub from_tag: String,
    pub to_tag: String,
}

fn header(headers: &Headers, pick: fn(&Header) -> Option<&str>) -> Option<&str> {
    headers.iter().find_map(pick)
}

fn call_id(headers: &Headers) -> Option<&str> {
    header(headers, |h| match h {
        Header::CallId(v) => Some(v.value()),
        _ => None,
    })
}

fn from_value(headers: &Headers) -> Option<&str> {
    header(headers, |h| match h {
        Header::From(v) => Some(v.value()),
        _ => None,
    })
}

fn to_value(headers: &Headers) -> Option<&str> {
    header(headers, |h| match h {
        Header::To(v) => Some(v.value()),
        _ => None,
    })
}

pub(crate) fn cseq(headers: &Headers) -> Option<rsip::typed::CSeq> {
    headers.iter().find_map(|h| match h {
        Header::CSeq(v) => v.typed().ok(),
        _ => None,
    })
}

fn method_key(method: &Method) -> String {
    match method {
        Method::Ack => Method::Invite.to_string(),
        other => other.to_string(),
    }
}

/// The server transaction key of a received request.
pub(crate) fn server_key(request: &Request) -> Result<TxKey, TxError> {
    let via = top_via(&request.headers).map_err(|_| TxError::MissingVia)?;
    let sent_by = via.sent_by.clone();
    let method = method_key(&request.method);
    match via.branch().map(str::to_owned) {
        Some(branch) if branch.starts_with(BRANCH_COOKIE) => Ok(TxKey {
            server: true,
            branch,
            sent_by,
            method,
        }),
        // RFC 2543 peers: no usable branch, so stand in with what identifies the request.
        _ => {
            let from_tag = from_value(&request.headers).and_then(|f| header_param(f, "tag"));
            let seq = cseq(&request.headers).map(|c| c.seq).unwrap_or(0);
            let branch = format!(
                "rfc2543;{};{};{}",
                call_id(&request.headers).unwrap_or(""),
                seq,
                from_tag.unwrap_or_default()
            );
            Ok(TxKey {
                server: true,
                branch,
                sent_by,
                method,
            })
        }
    }
}

/// The client transaction key of a request we send; it must carry an RFC 3261 branch.
pub(crate) fn client_key(request: &Request) -> Result<TxKey, TxError> {
    let via = top_via(&request.headers).map_err(|_| TxError::MissingVia)?;
    let branch = via.branch().unwrap_or_default().to_owned();
    if !branch.starts_with(BRANCH_COOKIE) || branch.len() <= BRANCH_COOKIE.len() {
        return Err(TxError::MissingBranch);
    }
    Ok(TxKey {
        server: false,
        branch,
        sent_by: String::new(),
        method: request.method.to_string(),
    })
}

/// The client transaction a response belongs to: top Via branch and CSeq method.
pub(crate) fn response_key(response: &Response) -> Option<TxKey> {
    let via = top_via(&response.headers).ok()?;
    let branch = via.branch()?.to_owned();
    let method = cseq(&response.headers)?.method.to_string();
    Some(TxKey {
        server: false,
        branch,
        sent_by: String::new(),
        method,
    })
}

/// The key an ACK for `response` (a 2xx to `request`) will carry.
pub(crate) fn ack_key_of_response(response: &Response) -> Option<AckKey> {
    Some(AckKey {
        call_id: call_id(&response.headers)?.trim().to_owned(),
        cseq: cseq(&response.headers)?.seq,
        from_tag: header_param(from_value(&response.headers)?, "tag")?,
        to_tag: header_param(to_value(&response.headers)?, "tag")?,
    })
}

pub(crate) fn ack_key_of_request(ack: &Request) -> Option<AckKey> {
    Some(AckKey {
        call_id: call_id(&ack.headers)?.trim().to_owned(),
        cseq: cseq(&ack.headers)?.seq,
        from_tag: header_param(from_value(&ack.headers)?, "tag")?,
        to_tag: header_param(to_value(&ack.headers)?, "tag")?,
    })
}

/// Headers shared by ACK (non-2xx) and CANCEL: the top Via only, Route as in the INVITE,
/// From, Call-ID, Max-Forwards, and CSeq with the INVITE's number.
fn derived_request(invite: &Request, method: Method, to: Header) -> Request {
    let mut headers = Headers::default();
    if let Some(Header::Via(via)) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        let top = split_header_list(via.value()).next().unwrap_or_default();
        headers.push(Header::Via(rsip::headers::Via::new(top)));
    }
    for h in invite.headers.iter() {
        match h {
            Header::Route(_) | Header::From(_) | Header::CallId(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    headers.push(to);
    let seq = cseq(&invite.headers).map(|c| c.seq).unwrap_or(1);
    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
        "{seq} {method}"
    ))));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Request {
        method,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: vec![],
    }
}

/// The ACK a client INVITE transaction sends for a 300-699 response (RFC 3261 17.1.1.3).
pub(crate) fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    let to = response
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| to_of(invite));
    derived_request(invite, Method::Ack, to)
}

fn to_of(request: &Request) -> Header {
    request
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| Header::To(rsip::headers::To::new("<sip:invalid>")))
}

/// A CANCEL for `invite` (RFC 3261 section 9.1). Send it with `send_request` once a
/// provisional response arrived; its transaction is matched by the INVITE's branch.
pub fn build_cancel(invite: &Request) -> Request {
    derived_request(invite, Method::Cancel, to_of(invite))
}

/// The 408 handed to the TU when a client transaction times out.
pub(crate) fn timeout_response(request: &Request) -> Response {
    response_to(request, 408, None, None)
}
