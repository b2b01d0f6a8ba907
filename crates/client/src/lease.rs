//! One bidirectional lease keep-alive stream for many lease IDs.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::error::{ClientError, Result};
use crate::pb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::stubs::lease_client::LeaseClient;

/// Sends keep-alive requests on the stream. Cheap to clone; the stream's
/// request side closes when every sender is dropped.
#[derive(Debug, Clone)]
pub struct KeepAliveSender {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl KeepAliveSender {
    /// Asks etcd to refresh lease `id`; the answer arrives on the
    /// [`KeepAliveStream`].
    pub async fn keep_alive(&self, id: i64) -> Result<()> {
        self.tx
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| ClientError::KeepAliveClosed("request side closed".into()))
    }
}

type Opening = JoinHandle<
    std::result::Result<tonic::Response<Streaming<LeaseKeepAliveResponse>>, tonic::Status>,
>;

enum State {
    /// The call is being made (etcd sends the response headers with its
    /// first answer, so opening completes only after a first request).
    Opening(Opening),
    Open(Box<Streaming<LeaseKeepAliveResponse>>),
    Done,
}

/// Answers from etcd: one [`LeaseKeepAliveResponse`] per request, with the
/// lease's new TTL (0 when the lease does not exist any more).
pub struct KeepAliveStream {
    endpoint: String,
    state: State,
}

impl std::fmt::Debug for KeepAliveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAliveStream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl KeepAliveStream {
    /// The next answer; `Ok(None)` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<LeaseKeepAliveResponse>>> {
        loop {
            match &mut self.state {
                State::Opening(handle) => {
                    let joined = match Pin::new(handle).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(j) => j,
                    };
                    match joined {
                        Ok(Ok(resp)) => self.state = State::Open(Box::new(resp.into_inner())),
                        Ok(Err(status)) => {
                            self.state = State::Done;
                            return Poll::Ready(Err(ClientError::from_status(
                                &self.endpoint,
                                &status,
                            )));
                        }
                        Err(e) => {
                            self.state = State::Done;
                            return Poll::Ready(Err(ClientError::KeepAliveClosed(e.to_string())));
                        }
                    }
                }
                State::Open(stream) => {
                    return match Pin::new(stream.as_mut()).poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Ok(m))) => Poll::Ready(Ok(Some(m))),
                        Poll::Ready(Some(Err(status))) => {
                            self.state = State::Done;
                            Poll::Ready(Err(ClientError::from_status(&self.endpoint, &status)))
                        }
                        Poll::Ready(None) => {
                            self.state = State::Done;
                            Poll::Ready(Ok(None))
                        }
                    };
                }
                State::Done => return Poll::Ready(Ok(None)),
            }
        }
    }
}

use std::future::Future as _;

impl Stream for KeepAliveStream {
    type Item = Result<LeaseKeepAliveResponse>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_message(cx).map(Result::transpose)
    }
}

impl Drop for KeepAliveStream {
    fn drop(&mut self) {
        if let State::Opening(handle) = &self.state {
            handle.abort();
        }
    }
}

pub(crate) fn open(
    endpoint: String,
    channel: Channel,
    token: Option<AsciiMetadataValue>,
) -> (KeepAliveSender, KeepAliveStream) {
    let (tx, rx) = mpsc::channel(256);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert("token", t);
    }
    let handle = tokio::spawn(async move { LeaseClient::new(channel).lease_keep_alive(req).await });
    (
        KeepAliveSender { tx },
        KeepAliveStream {
            endpoint,
            state: State::Opening(handle),
        },
    )
}
