//! Lazy, resumable paging over IoT Central lists.
//!
//! `az iot central api-token list` reads only the first page; here a list is a [`Pager`] that
//! fetches one page per [`Pager::next_page`] call and follows `nextLink` until the service stops
//! sending one. A failed page (after the client's own retries) can be asked for again: the pager
//! keeps its position. `nextLink` is followed only on the application's own origin, because the
//! request carries the credential.

use super::client::{Call, Client};
use super::error::Error;
use super::models::Page;
use futures::Stream;
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use url::Url;

/// Query options of a list call. Setting any of them switches the call to the preview
/// api-version (`2022-10-31-preview`), the only one that accepts them.
///
/// ```
/// use iotc::central::ListOptions;
/// let opts = ListOptions::default().filter("simulated eq true").max_page_size(100);
/// assert_eq!(opts.max_page_size, Some(100));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// `filter`, for example `contains(displayName, 'Thermostat')`.
    pub filter: Option<String>,
    /// `orderby`, for example `displayName desc`.
    pub orderby: Option<String>,
    /// `maxpagesize`, 1 to 100 (the service's default is 25).
    pub max_page_size: Option<u32>,
}

impl ListOptions {
    /// Sets `filter`.
    pub fn filter(mut self, expr: impl Into<String>) -> Self {
        self.filter = Some(expr.into());
        self
    }

    /// Sets `orderby`.
    pub fn orderby(mut self, expr: impl Into<String>) -> Self {
        self.orderby = Some(expr.into());
        self
    }

    /// Sets `maxpagesize`.
    pub fn max_page_size(mut self, n: u32) -> Self {
        self.max_page_size = Some(n);
        self
    }

    fn is_empty(&self) -> bool {
        self.filter.is_none() && self.orderby.is_none() && self.max_page_size.is_none()
    }
}

/// Which list options an operation accepts (per the preview spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepts {
    /// filter, orderby and maxpagesize.
    All,
    /// maxpagesize only.
    PageSize,
}

/// A lazy list: one request per page, following `nextLink` to the end.
///
/// ```no_run
/// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
/// let mut pager = client.list_api_tokens();
/// while let Some(page) = pager.next_page().await {
///     for token in page? .value {
///         println!("{:?}", token.id);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pager<T> {
    client: Client,
    operation: &'static str,
    next: Option<Url>,
    previous: Option<Url>,
    pending_error: Option<Error>,
    pages: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pager<T> {
    /// A pager over `segments` (for example `["devices"]`) with `options`.
    pub(crate) fn new(
        client: &Client,
        operation: &'static str,
        segments: &[&str],
        options: &ListOptions,
        accepts: Option<Accepts>,
    ) -> Pager<T> {
        let mut pager = Pager {
            client: client.clone(),
            operation,
            next: None,
            previous: None,
            pending_error: None,
            pages: 0,
            _item: PhantomData,
        };
        match first_url(client, operation, segments, options, accepts) {
            Ok(url) => pager.next = Some(url),
            Err(e) => pager.pending_error = Some(e),
        }
        pager
    }

    /// Fetches the next page; `None` once the last page was returned. After an error the same
    /// page is fetched again by the next call.
    pub async fn next_page(&mut self) -> Option<Result<Page<T>, Error>> {
        if let Some(e) = self.pending_error.take() {
            self.next = None;
            return Some(Err(e));
        }
        let url = self.next.clone()?;
        let call = Call::new(self.operation, Method::GET, url.clone());
        let page: Page<T> = match self.client.json(call).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        self.pages += 1;
        self.previous = Some(url);
        self.next = None;
        if let Some(link) = page.next_link.as_deref().filter(|l| !l.is_empty()) {
            match self.follow(link) {
                Ok(next) => self.next = Some(next),
                Err(e) => self.pending_error = Some(e),
            }
        }
        Some(Ok(page))
    }

    /// How many pages were fetched so far.
    pub fn pages_fetched(&self) -> u64 {
        self.pages
    }

    /// Reads every page and returns all items.
    pub async fn collect_all(mut self) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await {
            all.extend(page?.value);
        }
        Ok(all)
    }

    /// The items as a stream, fetching pages as the stream is read.
    pub fn into_stream(self) -> impl Stream<Item = Result<T, Error>> + Send
    where
        T: Send + 'static,
    {
        use futures::StreamExt;
        self.into_page_stream()
            .map(|page| match page {
                Ok(p) => futures::stream::iter(p.value.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            })
            .flatten()
    }

    /// The pages as a stream.
    pub fn into_page_stream(self) -> impl Stream<Item = Result<Page<T>, Error>> + Send
    where
        T: Send + 'static,
    {
        futures::stream::unfold((self, false), |(mut pager, failed)| async move {
            if failed {
                return None;
            }
            let page = pager.next_page().await?;
            let failed = page.is_err();
            Some((page, (pager, failed)))
        })
    }

    fn follow(&self, link: &str) -> Result<Url, Error> {
        let foreign = || Error::ForeignNextLink {
            operation: self.operation,
            next_link: link.to_owned(),
            origin: self.client.origin(),
        };
        let base = self.previous.as_ref().unwrap_or(self.client.base_url());
        let mut url = base.join(link).map_err(|_| foreign())?;
        if url.origin().ascii_serialization() != self.client.origin() {
            return Err(foreign());
        }
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            let v = self.client.api_version().to_owned();
            url.query_pairs_mut().append_pair("api-version", &v);
        }
        if Some(&url) == self.previous.as_ref() {
            return Err(Error::InvalidArgument {
                operation: self.operation,
                reason: "the service sent a nextLink equal to the page just read".into(),
            });
        }
        Ok(url)
    }
}

fn first_url(
    client: &Client,
    operation: &'static str,
    segments: &[&str],
    options: &ListOptions,
    accepts: Option<Accepts>,
) -> Result<Url, Error> {
    let bad = |reason: String| Error::InvalidArgument { operation, reason };
    if !options.is_empty() {
        match accepts {
            None => {
                return Err(bad(
                    "this list takes no filter, orderby or maxpagesize".into()
                ))
            }
            Some(Accepts::PageSize) if options.filter.is_some() || options.orderby.is_some() => {
                return Err(bad("this list takes maxpagesize only".into()))
            }
            _ => {}
        }
    }
    if let Some(n) = options.max_page_size {
        if !(1..=100).contains(&n) {
            return Err(bad(format!("maxpagesize must be 1 to 100, not {n}")));
        }
    }
    let mut url = client.url(operation, segments, !options.is_empty())?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(f) = &options.filter {
            q.append_pair("filter", f);
        }
        if let Some(o) = &options.orderby {
            q.append_pair("orderby", o);
        }
        if let Some(n) = options.max_page_size {
            q.append_pair("maxpagesize", &n.to_string());
        }
    }
    Ok(url)
}
