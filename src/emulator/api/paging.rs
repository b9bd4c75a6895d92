//! Lists: the list options each api-version takes, and keyset paging.
//!
//! A page costs what it holds, not what the list holds. The `$skiptoken` of a `nextLink`
//! carries the position after the last item of its page (the insertion sequence, and for
//! `orderby displayName` the folded name as well), and the next page is one keyset query
//! from there ([`crate::emulator::store::scan`]); organization reach and filters are applied
//! to the rows as they stream by, and the scan stops one item past a full page (that item
//! only says whether there is a next page). The token also carries a fingerprint of the list
//! it belongs to (path, api-version, filter, order) and an HMAC under a key of the
//! application, so a token from another list, or an edited one, is a 400 rather than a wrong
//! page. The page size is not part of the fingerprint: a client may change it between pages.
//!
//! The options by api-version (each as its spec declares them):
//! - `2022-07-31`: none; pages of [`GA_PAGE_SIZE`].
//! - `2022-06-30-preview`: OData `$filter`, `$orderby`, `$top` (the page size, 1 to 100,
//!   default [`PREVIEW_PAGE_SIZE`]).
//! - `2022-10-31-preview`: `filter`, `orderby`, `maxpagesize` (1 to 100, default
//!   [`PREVIEW_PAGE_SIZE`]).

use super::{ApiVersion, AppState, Ctx};
use crate::central::models::Page;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::query::{self, Expr};
use crate::emulator::store::{Cursor, Order};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Page size of lists on api-version 2022-07-31 (the spec declares no paging parameter).
pub const GA_PAGE_SIZE: usize = 100;
/// Default page size of the previews (`maxpagesize`, `$top`).
pub const PREVIEW_PAGE_SIZE: usize = 25;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: usize = 100;

/// Which list options a list operation takes (on the api-versions that have list options).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ListOptions {
    pub filter: bool,
    pub orderby: bool,
    pub page_size: bool,
}

impl ListOptions {
    /// No list option.
    pub const NONE: ListOptions = ListOptions {
        filter: false,
        orderby: false,
        page_size: false,
    };
    /// Only the page size.
    pub const PAGE_SIZE: ListOptions = ListOptions {
        filter: false,
        orderby: false,
        page_size: true,
    };
    /// Filter, order and page size.
    pub const ALL: ListOptions = ListOptions {
        filter: true,
        orderby: true,
        page_size: true,
    };
}

/// The names an api-version gives its list options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptionNames {
    pub filter: &'static str,
    pub orderby: &'static str,
    pub page_size: &'static str,
}

const ODATA: OptionNames = OptionNames {
    filter: "$filter",
    orderby: "$orderby",
    page_size: "$top",
};
const PREVIEW: OptionNames = OptionNames {
    filter: "filter",
    orderby: "orderby",
    page_size: "maxpagesize",
};

impl ApiVersion {
    /// The names of its list options, if it has any.
    pub(crate) fn list_option_names(self) -> Option<OptionNames> {
        match self {
            ApiVersion::Ga => None,
            ApiVersion::Preview0630 => Some(ODATA),
            ApiVersion::Preview1031 => Some(PREVIEW),
        }
    }
}

/// The parsed list options of a request.
#[derive(Debug, Clone)]
pub(crate) struct ListParams {
    pub filter: Option<Expr>,
    pub order: Order,
    pub page_size: usize,
    pub after: Option<Cursor>,
}

impl ListParams {
    /// Whether a device passes the filter.
    pub fn admits(&self, d: &crate::central::models::Device, kind: query::DeviceKind) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches_as(d, kind))
    }
}

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Reads the list options of the request's api-version and its `$skiptoken`. An option the
/// operation or the api-version does not take is a 400 naming what it does take, never
/// silently ignored.
pub(crate) fn list_params(st: &AppState, ctx: &Ctx, opts: ListOptions) -> ApiResult<ListParams> {
    let names = ctx.version.list_option_names();
    let mut out = ListParams {
        filter: None,
        order: Order::Created,
        page_size: if names.is_some() {
            PREVIEW_PAGE_SIZE
        } else {
            GA_PAGE_SIZE
        },
        after: None,
    };
    let mut token = None;
    for (k, v) in &ctx.query {
        let k = k.as_str();
        let is = |pick: fn(&OptionNames) -> &'static str, on: bool| {
            on && names.is_some_and(|n| pick(&n) == k)
        };
        if k == "api-version" {
        } else if k == "$skiptoken" {
            token = Some(v.as_str());
        } else if is(|n| n.filter, opts.filter) {
            out.filter = Some(
                query::parse_filter(v)
                    .map_err(|m| invalid("InvalidFilter", format!("invalid filter: {m}")))?,
            );
        } else if is(|n| n.orderby, opts.orderby) {
            let desc = query::parse_orderby(v).map_err(|m| invalid("InvalidOrderBy", m))?;
            out.order = Order::Name { desc };
        } else if is(|n| n.page_size, opts.page_size) {
            out.page_size = page_size(k, v)?;
        } else if [ODATA, PREVIEW]
            .iter()
            .any(|n| [n.filter, n.orderby, n.page_size].contains(&k))
        {
            return Err(invalid(
                "InvalidQueryParameter",
                format!(
                    "{k} is not a list option of this operation on api-version {}; it takes {}",
                    ctx.version.as_str(),
                    taken(names, opts)
                ),
            ));
        } else {
            return Err(invalid(
                "InvalidQueryParameter",
                format!("query parameter {k:?} is not supported by this operation"),
            ));
        }
    }
    if let Some(t) = token {
        out.after = Some(decode_skiptoken(st, ctx, t).ok_or_else(|| {
            invalid(
                "InvalidSkipToken",
                "the $skiptoken is not valid for this list (it is changed, or it belongs to another list)",
            )
        })?);
    }
    Ok(out)
}

/// What list options an operation takes on an api-version, for error messages.
fn taken(names: Option<OptionNames>, opts: ListOptions) -> String {
    let Some(n) = names else {
        return "none (2022-07-31 declares no list options)".into();
    };
    let list: Vec<&str> = [
        (opts.filter, n.filter),
        (opts.orderby, n.orderby),
        (opts.page_size, n.page_size),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn page_size(name: &str, v: &str) -> ApiResult<usize> {
    let msg = || format!("{name} must be an integer from 1 to {MAX_PAGE_SIZE}, got {v:?}");
    let n: usize = v
        .parse()
        .map_err(|_| invalid("InvalidMaxPageSize", msg()))?;
    if !(1..=MAX_PAGE_SIZE).contains(&n) {
        return Err(invalid("InvalidMaxPageSize", msg()));
    }
    Ok(n)
}

/// What identifies a list: the path, the api-version, the filter and the order as given.
fn fingerprint(ctx: &Ctx) -> String {
    let names = ctx.version.list_option_names();
    let mut h = Sha256::new();
    h.update(ctx.path.as_bytes());
    h.update([0]);
    h.update(ctx.version.as_str().as_bytes());
    let mut shaping: Vec<&(String, String)> = ctx
        .query
        .iter()
        .filter(|(k, _)| names.is_some_and(|n| k == n.filter || k == n.orderby))
        .collect();
    shaping.sort();
    for (k, v) in shaping {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
    }
    hex(&h.finalize()[..12])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    /// The list fingerprint.
    l: String,
    /// The position.
    #[serde(flatten)]
    at: Cursor,
}

const TAG_LEN: usize = 16;

fn mac(st: &AppState) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    Hmac::<Sha256>::new_from_slice(st.facts.page_key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

fn encode_skiptoken(st: &AppState, ctx: &Ctx, at: Cursor) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = Token {
        l: fingerprint(ctx),
        at,
    };
    let payload = serde_json::to_vec(&token).unwrap_or_default();
    let mut m = mac(st);
    m.update(&payload);
    let tag = m.finalize().into_bytes();
    format!("{}.{}", b64.encode(&payload), b64.encode(&tag[..TAG_LEN]))
}

fn decode_skiptoken(st: &AppState, ctx: &Ctx, s: &str) -> Option<Cursor> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, tag) = s.split_once('.')?;
    let payload = b64.decode(payload).ok()?;
    let tag = b64.decode(tag).ok()?;
    if tag.len() != TAG_LEN {
        return None;
    }
    let mut m = mac(st);
    m.update(&payload);
    m.verify_truncated_left(&tag).ok()?;
    let token: Token = serde_json::from_slice(&payload).ok()?;
    (token.l == fingerprint(ctx)).then_some(token.at)
}

/// Collects one page from a stream of (position, item): it takes items until the page is
/// full and one more shows that a next page exists.
pub(crate) struct PageBuilder<T> {
    size: usize,
    items: Vec<T>,
    last: Option<Cursor>,
    more: bool,
}

impl<T> PageBuilder<T> {
    /// An empty page of `params.page_size`.
    pub fn new(params: &ListParams) -> Self {
        PageBuilder {
            size: params.page_size,
            items: Vec::with_capacity(params.page_size.min(MAX_PAGE_SIZE)),
            last: None,
            more: false,
        }
    }

    /// Offers the next item; whether the scan should go on.
    pub fn push(&mut self, at: Cursor, item: T) -> bool {
        if self.items.len() == self.size {
            self.more = true;
            return false;
        }
        self.items.push(item);
        self.last = Some(at);
        true
    }

    /// The page with its `nextLink` (the same query with a new `$skiptoken`).
    pub fn finish(self, st: &AppState, ctx: &Ctx) -> Page<T> {
        let next_link = match (self.more, self.last) {
            (true, Some(last)) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &ctx.query {
                    if k != "$skiptoken" {
                        ser.append_pair(k, v);
                    }
                }
                ser.append_pair("$skiptoken", &encode_skiptoken(st, ctx, last));
                Some(format!("{}{}?{}", st.api_url, ctx.path, ser.finish()))
            }
            _ => None,
        };
        Page {
            value: self.items,
            next_link,
        }
    }
}

/// Pages a list held in memory (the built-in roles): positions are indexes.
pub(crate) fn page_of<T>(st: &AppState, ctx: &Ctx, params: &ListParams, items: Vec<T>) -> Page<T> {
    let start = params.after.as_ref().map_or(0, |c| c.seq.max(-1) + 1) as usize;
    let mut page = PageBuilder::new(params);
    for (i, item) in items.into_iter().enumerate().skip(start) {
        let at = Cursor {
            seq: i as i64,
            name: None,
        };
        if !page.push(at, item) {
            break;
        }
    }
    page.finish(st, ctx)
}
