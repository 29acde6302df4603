//! Dialog state (RFC 3261 section 12): identity, route set, remote target and CSeq numbers,
//! and the in-dialog requests built from them. Both legs of a call keep one of these.

use crate::sip::headers::{name_addr_uri, split_header_list, to_tag_of};
use crate::sip::message::new_branch;
use rand::Rng;
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, Request, Response};

/// Call-ID plus the two tags, seen from our side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog an incoming in-dialog request belongs to (ours is the To tag).
    pub fn of_request(request: &Request) -> Option<Self> {
        let headers = &request.headers;
        Some(DialogId {
            call_id: value(headers, "Call-ID")?,
            local_tag: to_tag_of(&value(headers, "To")?)?,
            remote_tag: to_tag_of(&value(headers, "From")?)?,
        })
    }

    /// The dialog a response to one of our requests belongs to (ours is the From tag).
    pub fn of_response(response: &Response) -> Option<Self> {
        let headers = &response.headers;
        Some(DialogId {
            call_id: value(headers, "Call-ID")?,
            local_tag: to_tag_of(&value(headers, "From")?)?,
            remote_tag: to_tag_of(&value(headers, "To")?)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    Confirmed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unreadable Contact URI")]
    BadContact,
    #[error("CSeq {got} not above {last}")]
    OutOfOrder { got: u32, last: u32 },
    #[error("request does not belong to this dialog")]
    NotInDialog,
}

impl DialogError {
    /// What to answer an in-dialog request refused for this reason.
    pub fn status_code(&self) -> u16 {
        match self {
            DialogError::OutOfOrder { .. } => 500,
            DialogError::NotInDialog => 481,
            DialogError::Missing(_) | DialogError::BadContact => 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our From/To header value, tag included.
    pub local_party: String,
    /// The peer's From/To header value, tag included.
    pub remote_party: String,
    /// Where in-dialog requests go (the peer's Contact URI).
    pub remote_target: rsip::Uri,
    /// Route header values for in-dialog requests, in the order they are sent.
    pub route_set: Vec<String>,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
}

fn value(headers: &Headers, name: &str) -> Option<String> {
    headers.iter().find_map(|h| {
        let v = match (h, name) {
            (Header::CallId(v), "Call-ID") => v.value(),
            (Header::From(v), "From") => v.value(),
            (Header::To(v), "To") => v.value(),
            (Header::CSeq(v), "CSeq") => v.value(),
            _ => return None,
        };
        Some(v.trim().to_owned())
    })
}

fn seq_of(headers: &Headers) -> Result<u32, DialogError> {
    value(headers, "CSeq")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or(DialogError::Missing("CSeq"))
}

/// The URI inside the first Contact of `headers`.
fn contact_uri(headers: &Headers) -> Result<rsip::Uri, DialogError> {
    let contact = headers
        .iter()
        .find_map(|h| match h {
            Header::Contact(v) => split_header_list(v.value()).next().map(str::to_owned),
            _ => None,
        })
        .ok_or(DialogError::Missing("Contact"))?;
    name_addr_uri(&contact).ok_or(DialogError::BadContact)
}

/// Record-Route entries of `headers`, each header split into its elements, in order.
fn record_routes(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(v) => Some(v.value()),
            _ => None,
        })
        .flat_map(split_header_list)
        .map(str::to_owned)
        .collect()
}

impl Dialog {
    /// The UAC side, from our INVITE and a 1xx (with To tag) or 2xx to it (RFC 3261 12.1.2).
    pub fn from_uac(request: &Request, response: &Response) -> Result<Self, DialogError> {
        let id = DialogId::of_response(response).ok_or(DialogError::Missing("tag or Call-ID"))?;
        let mut route_set = record_routes(&response.headers);
        route_set.reverse();
        let code = response.status_code.code();
        Ok(Dialog {
            id,
            state: if code < 200 {
                DialogState::Early
            } else {
                DialogState::Confirmed
            },
            local_party: value(&request.headers, "From").ok_or(DialogError::Missing("From"))?,
            remote_party: value(&response.headers, "To").ok_or(DialogError::Missing("To"))?,
            remote_target: contact_uri(&response.headers)?,
            route_set,
            local_seq: seq_of(&request.headers)?,
            remote_seq: None,
        })
    }

    /// The UAS side, from a received INVITE and the To tag our responses carry (12.1.1).
    pub fn from_uas(request: &Request, local_tag: &str) -> Result<Self, DialogError> {
        let remote_party = value(&request.headers, "From").ok_or(DialogError::Missing("From"))?;
        let to = value(&request.headers, "To").ok_or(DialogError::Missing("To"))?;
        let local_party = match to_tag_of(&to) {
            Some(_) => to,
            None => format!("{to};tag={local_tag}"),
        };
        Ok(Dialog {
            id: DialogId {
                call_id: value(&request.headers, "Call-ID")
                    .ok_or(DialogError::Missing("Call-ID"))?,
                local_tag: local_tag.to_owned(),
                remote_tag: to_tag_of(&remote_party).ok_or(DialogError::Missing("From tag"))?,
            },
            state: DialogState::Confirmed,
            local_party,
            remote_party,
            remote_target: contact_uri(&request.headers)?,
            route_set: record_routes(&request.headers),
            local_seq: 0,
            remote_seq: Some(seq_of(&request.headers)?),
        })
    }

    /// A 2xx confirms an early dialog; as a target refresh it may move the remote target.
    pub fn on_response(&mut self, response: &Response) {
        if (200..300).contains(&response.status_code.code()) {
            self.state = DialogState::Confirmed;
            if let Ok(uri) = contact_uri(&response.headers) {
                self.remote_target = uri;
            }
        }
    }

    /// Checks an in-dialog request from the peer: it must be ours and its CSeq must rise
    /// (RFC 3261 section 12.2.2). ACK and CANCEL reuse the INVITE's number and are not
    /// counted. Target refresh requests (re-INVITE, UPDATE) move the remote target.
    pub fn on_request(&mut self, request: &Request) -> Result<(), DialogError> {
        if DialogId::of_request(request).as_ref() != Some(&self.id) {
            return Err(DialogError::NotInDialog);
        }
        let seq = seq_of(&request.headers)?;
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if seq <= last {
                    return Err(DialogError::OutOfOrder { got: seq, last });
                }
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Ok(uri) = contact_uri(&request.headers) {
                self.remote_target = uri;
            }
        }
        Ok(())
    }

    /// True when the first route is a strict router (no `lr`): RFC 3261 section 12.2.1.1.
    fn strict_first_route(&self) -> bool {
        self.route_set.first().is_some_and(|route| {
            name_addr_uri(route)
                .is_some_and(|uri| !uri.params.iter().any(|p| matches!(p, rsip::Param::Lr)))
        })
    }

    /// Where to send in-dialog requests: the first route, or the remote target.
    pub fn next_hop(&self) -> rsip::Uri {
        self.route_set
            .first()
            .and_then(|r| name_addr_uri(r))
            .unwrap_or_else(|| self.remote_target.clone())
    }

    /// A new in-dialog request (BYE, re-INVITE, INFO, ...) with the next local CSeq, a fresh
    /// branch on a Via for `via_sent_by` over `via_transport` ("WSS", "UDP"...), and
    /// `contact` (a Contact header value) when given.
    pub fn request(
        &mut self,
        method: Method,
        via_transport: &str,
        via_sent_by: &str,
        contact: Option<&str>,
        rng: &mut impl Rng,
    ) -> Request {
        self.local_seq += 1;
        let seq = self.local_seq;
        self.build(method, seq, via_transport, via_sent_by, contact, rng)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (RFC 3261 section 13.2.2.4):
    /// same CSeq number, new branch, sent end-to-end along the route set.
    pub fn ack(
        &self,
        invite_seq: u32,
        via_transport: &str,
        via_sent_by: &str,
        rng: &mut impl Rng,
    ) -> Request {
        self.build(
            Method::Ack,
            invite_seq,
            via_transport,
            via_sent_by,
            None,
            rng,
        )
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        via_transport: &str,
        via_sent_by: &str,
        contact: Option<&str>,
        rng: &mut impl Rng,
    ) -> Request {
        let mut headers = Headers::default();
        let branch = new_branch(rng);
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{via_transport} {via_sent_by};branch={branch}"
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        let (uri, routes) = if self.strict_first_route() {
            // Strict router: it becomes the Request-URI, the remote target the last Route.
            let mut routes: Vec<String> = self.route_set[1..].to_vec();
            routes.push(format!("<{}>", self.remote_target));
            (self.next_hop(), routes)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        for route in routes {
            headers.push(Header::Route(rsip::headers::Route::new(route)));
        }
        headers.push(Header::From(rsip::headers::From::new(
            self.local_party.clone(),
        )));
        headers.push(Header::To(rsip::headers::To::new(
            self.remote_party.clone(),
        )));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.id.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{seq} {method}"
        ))));
        if let Some(contact) = contact {
            headers.push(Header::Contact(rsip::headers::Contact::new(contact)));
        }
        headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
            "0",
        )));
        Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
