//! The agent side, on every node: the subscriptions of its manager answered from the task
//! logs on disk, chunk by chunk, then followed until cancelled.

use super::*;

/// Answers the subscriptions of the manager at the other end of `channel` from the task
/// logs under `data_dir`, until the stream ends; dropping it stops every subscription.
pub(crate) async fn serve(channel: Channel, data_dir: PathBuf) -> Result<(), Status> {
    let (publish, outbound) = mpsc::channel::<LogPublish>(BUFFER);
    let mut subscriptions = DispatcherClient::new(channel)
        .logs(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut running: HashMap<String, Tasks> = HashMap::new();
    while let Some(subscription) = subscriptions.message().await? {
        running.retain(|_, tasks| tasks.0.iter().any(|t| !t.is_finished()));
        if subscription.cancel {
            running.remove(&subscription.id);
            continue;
        }
        let id = subscription.id.clone();
        let answer = tokio::spawn(answer(subscription, data_dir.clone(), publish.clone()));
        running.insert(id, Tasks(vec![answer]));
    }
    Ok(())
}

/// One subscription: the selected lines of each task, then (following) the new ones.
pub(super) async fn answer(
    subscription: LogSubscription,
    data_dir: PathBuf,
    publish: mpsc::Sender<LogPublish>,
) {
    let selection = selection(&subscription);
    let task_ids = subscription.task_ids.clone();
    // Reading a log back is file IO of up to tens of MiB: off the async threads.
    let read = tokio::task::spawn_blocking(move || {
        task_ids
            .into_iter()
            .map(|id| {
                let read = TaskLogs::of(&data_dir, &id).and_then(|logs| logs.read(selection));
                (id, read)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(read) = read else {
        return;
    };
    let mut chunker = Chunker::new(&subscription.id);
    let mut errors = Vec::new();
    let mut followers: Vec<(String, TaskFollower)> = Vec::new();
    for (task_id, result) in read {
        match result {
            Ok((lines, follower)) => {
                for line in lines {
                    chunker.push(record(&task_id, line));
                    if chunker.is_full() && publish.send(chunker.take()).await.is_err() {
                        return;
                    }
                }
                followers.push((task_id, follower));
            }
            // A task that never ran here (no image, never started) has no lines: nothing
            // to say.
            Err(TaskLogError::Missing(_)) => {}
            Err(error) => errors.push(format!("task {task_id}: {error}")),
        }
    }
    let mut last = chunker.take();
    last.errors = errors;
    last.close = !subscription.follow;
    if publish.send(last).await.is_err() || !subscription.follow {
        return;
    }
    let (lines, mut received) = mpsc::channel::<LogRecord>(CHUNK_LINES);
    let _followers = Tasks(
        followers
            .into_iter()
            .map(|(task_id, mut follower)| {
                let lines = lines.clone();
                tokio::spawn(async move {
                    while let Ok(line) = follower.next_line().await {
                        if lines.send(record(&task_id, line)).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect(),
    );
    drop(lines);
    while let Some(first) = received.recv().await {
        chunker.push(first);
        while !chunker.is_full() {
            match received.try_recv() {
                Ok(more) => chunker.push(more),
                Err(_) => break,
            }
        }
        if publish.send(chunker.take()).await.is_err() {
            return;
        }
    }
}
