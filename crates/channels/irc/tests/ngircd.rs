//! The IRC channel against a real IRC server: ngircd (Debian's `ngircd`), started by each
//! test on loopback with its own config, plus real client connections as the users.
//! SASL is not here: ngircd has none (the AUTHENTICATE exchange is tested against a
//! scripted socket in `conn.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw_channel::memory::MemoryLedger;
use nanoclaw_channel::{
    Channel, ChannelEvent, InboundEvent, LinkState, OutgoingFile, OutgoingMessage, SendLedger,
};
use nanoclaw_channel_irc::{IrcChannel, IrcConfig};
use nanoclaw_test_support::eventually;
use nanoclaw_test_support::platforms::irc::{IrcUser, Ngircd, TestCa};
use tokio::sync::mpsc;

const BOT: &str = "nanobot";

fn config(server: &str) -> IrcConfig {
    IrcConfig {
        enabled: true,
        server: server.to_owned(),
        tls: false,
        ca_file: None,
        nick: BOT.to_owned(),
        username: None,
        realname: None,
        channels: vec!["#ops".to_owned()],
        sasl: false,
        flood_burst: 5,
        flood_per_sec: 4.0,
        ignore_nicks: vec!["otherbot".to_owned()],
    }
}

struct Bot {
    channel: Arc<IrcChannel>,
    events: mpsc::Receiver<ChannelEvent>,
}

async fn start_bot(config: IrcConfig) -> Bot {
    let ledger: Arc<dyn SendLedger> = Arc::new(MemoryLedger::default());
    let channel = Arc::new(IrcChannel::new(config, None, ledger).unwrap());
    let (sink, events) = mpsc::channel(64);
    Arc::clone(&channel).start(sink).await.unwrap();
    Bot { channel, events }
}

impl Bot {
    async fn next_inbound(&mut self) -> InboundEvent {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(ChannelEvent::Inbound(e)) = self.events.recv().await {
                    return e;
                }
            }
        })
        .await
        .expect("an inbound message in 20 s")
    }

    async fn say(&self, chat: &str, text: &str) {
        self.say_with(chat, text, Vec::new()).await;
    }

    async fn say_with(&self, chat: &str, text: &str, files: Vec<OutgoingFile>) {
        let message = OutgoingMessage {
            outbound_id: 1,
            idempotency_key: format!("k-{}", rand_key()),
            chat_id: chat.to_owned(),
            text: text.to_owned(),
            kind: "reply".into(),
            files,
            ..OutgoingMessage::default()
        };
        self.channel.deliver(&message).await.unwrap();
    }
}

fn rand_key() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A user in `#ops` once the bot is there too.
async fn user_with_bot(server: &Ngircd, nick: &str) -> IrcUser {
    let user = IrcUser::connect(&server.addr(), nick).await;
    user.join("#ops").await;
    eventually(20, "the bot in #ops", || async {
        user.names("#ops")
            .await
            .iter()
            .any(|n| n.starts_with(BOT))
            .then_some(())
    })
    .await;
    user
}

async fn received(user: &IrcUser, target: &str, count: usize) -> Vec<String> {
    eventually(30, &format!("{count} lines to {target}"), || async {
        let got = user.privmsgs_from(BOT, target);
        (got.len() >= count).then_some(got)
    })
    .await
}

#[tokio::test]
async fn registers_joins_reads_channel_and_private_messages_and_answers_both() {
    let server = Ngircd::start().await;
    let mut bot = start_bot(config(&server.addr())).await;
    let alice = user_with_bot(&server, "Alice").await;

    alice.say("#ops", "nanobot: what time is it?").await;
    let e = bot.next_inbound().await;
    assert_eq!(e.chat_id, "#ops");
    assert!(e.is_group && e.mentions_me);
    assert_eq!(e.sender_name.as_deref(), Some("Alice"));
    assert_eq!(e.text, "what time is it?", "the address is taken off");

    alice.say("#ops", "just talking among ourselves").await;
    let e = bot.next_inbound().await;
    assert!(!e.mentions_me, "no nick, no mention");

    // NOTICEs are never answered (nor passed on); CTCP VERSION neither; ACTION is text.
    alice.raw("NOTICE nanobot :automated notice\r\n").await;
    alice.say("nanobot", "\x01VERSION\x01").await;
    alice.say("#ops", "\x01ACTION waves at nanobot\x01").await;
    let e = bot.next_inbound().await;
    assert_eq!(e.text, "* Alice waves at nanobot");
    assert!(e.mentions_me);

    alice.say(BOT, "a private question").await;
    let e = bot.next_inbound().await;
    assert_eq!((e.chat_id.as_str(), e.is_group), ("alice", false));
    assert!(e.mentions_me);
    assert!(e.platform_msg_id.starts_with("h:"), "{}", e.platform_msg_id);

    bot.say("#ops", "answer in the channel").await;
    bot.say("alice", "answer in private").await;
    assert_eq!(
        received(&alice, "#ops", 1).await,
        vec!["answer in the channel"]
    );
    assert_eq!(
        received(&alice, "Alice", 1).await,
        vec!["answer in private"]
    );

    let health = bot.channel.health();
    assert_eq!(health.state, LinkState::Connected);
    assert!(health.last_event.is_some());
}

#[tokio::test]
async fn a_long_reply_arrives_whole_in_order_in_lines_under_512_bytes() {
    let server = Ngircd::start().await;
    let bot = start_bot(config(&server.addr())).await;
    let alice = user_with_bot(&server, "alice").await;
    // Multi-byte words, so a cut in the wrong place would break a character.
    let words: Vec<String> = (0..600).map(|i| format!("wörd{i:03}")).collect();
    let text = words.join(" ");
    bot.say("#ops", &text).await;
    let lines = eventually(60, "every word", || async {
        let lines = alice.privmsg_lines_from(BOT, "#ops");
        let got: usize = lines
            .iter()
            .map(|l| l.params[1].split_whitespace().count())
            .sum();
        (got >= words.len()).then_some(lines)
    })
    .await;
    assert!(lines.len() > 1);
    for l in &lines {
        // As relayed to Alice, with the server's prefix (CR LF removed by the reader).
        assert!(
            l.raw.len() + 2 <= 512,
            "{} bytes: {}",
            l.raw.len() + 2,
            l.raw
        );
    }
    let got: Vec<String> = lines
        .iter()
        .flat_map(|l| {
            l.params[1]
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, words, "every word once, in order, none cut");
}

#[tokio::test]
async fn line_breaks_in_a_reply_become_messages_never_commands() {
    let server = Ngircd::start().await;
    let bot = start_bot(config(&server.addr())).await;
    let alice = user_with_bot(&server, "alice").await;
    bot.say(
        "#ops",
        "hi\r\nQUIT :pwned\r\nJOIN #evil\nPRIVMSG #ops :\0spoof",
    )
    .await;
    let got = received(&alice, "#ops", 4).await;
    assert_eq!(
        got,
        vec!["hi", "QUIT :pwned", "JOIN #evil", "PRIVMSG #ops :spoof"]
    );
    // The bot did not quit and did not join.
    assert!(alice.is_online(BOT).await);
    assert!(
        !alice
            .names("#evil")
            .await
            .iter()
            .any(|n| n.starts_with(BOT))
    );
    assert_eq!(bot.channel.health().state, LinkState::Connected);
}

#[tokio::test]
async fn a_taken_nick_falls_back_and_mentions_follow_the_nick_in_use() {
    let server = Ngircd::start().await;
    let squatter = IrcUser::connect(&server.addr(), BOT).await;
    let mut bot = start_bot(config(&server.addr())).await;
    assert_eq!(bot.channel.current_nick().as_deref(), Some("nanobot_"));
    let alice = user_with_bot(&server, "alice").await;
    alice.say("#ops", "nanobot_: are you the real one?").await;
    let e = bot.next_inbound().await;
    assert!(e.mentions_me);
    // The squatter's own messages are not the bot's.
    squatter.join("#ops").await;
    squatter.say("#ops", "I am nanobot").await;
    let e = bot.next_inbound().await;
    assert_eq!(e.sender_name.as_deref(), Some(BOT));
    assert!(!e.mentions_me, "nanobot is not our nick now");
}

#[tokio::test]
async fn tls_with_the_extra_ca_works_and_a_wrong_ca_is_refused() {
    let server = Ngircd::start().await;
    let mut good = config(&server.tls_addr());
    good.tls = true;
    good.ca_file = Some(server.ca_file());
    let ledger: Arc<dyn SendLedger> = Arc::new(MemoryLedger::default());
    let channel = IrcChannel::new(good.clone(), None, Arc::clone(&ledger)).unwrap();
    let who = channel.verify().await.unwrap();
    assert_eq!(who, format!("nanobot on {}", server.tls_addr()));

    // The whole path over TLS: a message in, a reply out.
    let mut bot = start_bot(good.clone()).await;
    let alice = user_with_bot(&server, "alice").await;
    alice.say(BOT, "over tls").await;
    assert_eq!(bot.next_inbound().await.text, "over tls");
    bot.say("alice", "back over tls").await;
    assert_eq!(received(&alice, "alice", 1).await, vec!["back over tls"]);

    // Another CA, and no extra CA at all: the server's certificate is not trusted.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, TestCa::generate().ca_pem).unwrap();
    for ca_file in [Some(other), None] {
        let mut bad = good.clone();
        bad.ca_file = ca_file.clone();
        let channel = IrcChannel::new(bad, None, Arc::clone(&ledger)).unwrap();
        let err = channel.verify().await.unwrap_err().to_string();
        assert!(
            err.contains("certificate") || err.contains("UnknownIssuer"),
            "{ca_file:?}: {err}"
        );
    }
}

#[tokio::test]
async fn after_the_server_restarts_the_bot_reconnects_and_nothing_after_is_lost() {
    let server = Ngircd::start().await;
    let mut bot = start_bot(config(&server.addr())).await;
    let _alice = user_with_bot(&server, "alice").await;
    server.restart().await;
    eventually(30, "the bot saw the link break", || async {
        (bot.channel.health().reconnects >= 1).then_some(())
    })
    .await;
    // Everyone reconnects; what is said now reaches the bot and its answer reaches us.
    let alice = user_with_bot(&server, "alice").await;
    eventually(30, "connected again", || async {
        (bot.channel.health().state == LinkState::Connected).then_some(())
    })
    .await;
    for i in 0..3 {
        alice
            .say("#ops", &format!("nanobot: after the restart {i}"))
            .await;
    }
    for i in 0..3 {
        assert_eq!(
            bot.next_inbound().await.text,
            format!("after the restart {i}")
        );
    }
    bot.say("#ops", "still here").await;
    assert_eq!(received(&alice, "#ops", 1).await, vec!["still here"]);
    let health = bot.channel.health();
    assert!(health.reconnects >= 1);
    assert!(health.last_error.is_some());
}

#[tokio::test]
async fn a_twenty_line_reply_is_paced_by_the_bucket_and_the_server_keeps_the_bot() {
    let server = Ngircd::start().await;
    let mut cfg = config(&server.addr());
    cfg.flood_burst = 3;
    cfg.flood_per_sec = 4.0;
    let bot = start_bot(cfg).await;
    let alice = user_with_bot(&server, "alice").await;
    // Let the bucket refill after the JOIN.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text: String = (0..20).map(|i| format!("line {i:02}\n")).collect();
    let started = Instant::now();
    bot.say("#ops", &text).await;
    let sent_in = started.elapsed();
    let lines = eventually(30, "twenty lines", || async {
        let l = alice.privmsg_lines_from(BOT, "#ops");
        (l.len() >= 20).then_some(l)
    })
    .await;
    let texts: Vec<&str> = lines.iter().map(|l| l.params[1].as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("line {i:02}")).collect();
    assert_eq!(texts, expected);
    // 3 at once, then 17 at 4 a second: at least ~4.25 s from the first to the last.
    let span = lines[19].at.duration_since(lines[0].at);
    assert!(span >= Duration::from_millis(3800), "paced over {span:?}");
    assert!(
        sent_in >= Duration::from_millis(3800),
        "deliver took {sent_in:?}"
    );
    // ngircd's own flood limit never threw the bot off.
    assert!(alice.is_online(BOT).await);
    assert_eq!(bot.channel.health().reconnects, 0);
}

#[tokio::test]
async fn files_become_a_line_saying_irc_has_no_attachments() {
    let server = Ngircd::start().await;
    let bot = start_bot(config(&server.addr())).await;
    let alice = user_with_bot(&server, "alice").await;
    let file = OutgoingFile {
        file_name: "report.bin".into(),
        path: "/nonexistent/report.bin".into(),
        mime_type: None,
    };
    bot.say_with("#ops", "the report", vec![file]).await;
    assert_eq!(
        received(&alice, "#ops", 2).await,
        vec![
            "the report",
            "[file report.bin not sent: IRC has no attachments]"
        ]
    );
}

#[tokio::test]
async fn verify_registers_and_quits_and_an_unreachable_server_says_so() {
    let server = Ngircd::start().await;
    let ledger: Arc<dyn SendLedger> = Arc::new(MemoryLedger::default());
    let channel = IrcChannel::new(config(&server.addr()), None, Arc::clone(&ledger)).unwrap();
    assert_eq!(
        channel.verify().await.unwrap(),
        format!("nanobot on {}", server.addr())
    );
    let watcher = IrcUser::connect(&server.addr(), "watcher").await;
    eventually(10, "the check's connection gone", || async {
        (!watcher.is_online(BOT).await).then_some(())
    })
    .await;
    server.stop();
    assert!(channel.verify().await.is_err());
}
