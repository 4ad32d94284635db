//! Where the run's interrupts come from: SIGINT and SIGTERM in production, a channel a
//! test writes to in-process. The dispatcher only ever sees [`Interrupt`]s.

use tokio::sync::mpsc;

/// A request from outside to stop the run (Ctrl-C, SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt;

/// The stream of interrupts a run listens to.
pub struct SignalSource {
    rx: mpsc::UnboundedReceiver<Interrupt>,
    _task: Option<tokio::task::JoinHandle<()>>,
}

impl SignalSource {
    /// SIGINT and SIGTERM of this process. Installed before planning, so an interrupt
    /// during discovery or a build is seen too (and not left to the default action).
    pub fn os() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = int.recv() => {}
                    Some(()) = term.recv() => {}
                    else => break,
                }
                if tx.send(Interrupt).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            rx,
            _task: Some(task),
        })
    }

    /// A source fed by hand: the sender injects interrupts (tests).
    pub fn manual() -> (mpsc::UnboundedSender<Interrupt>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx, _task: None })
    }

    /// The next interrupt; pending forever once the source is gone.
    pub async fn next(&mut self) -> Interrupt {
        match self.rx.recv().await {
            Some(i) => i,
            None => std::future::pending().await,
        }
    }

    /// An interrupt that already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Interrupt> {
        self.rx.try_recv().ok()
    }
}
