//! Matrix for the channel conformance suite: a driver of a real Synapse
//! ([`crate::matrix`]), not a fake. Users are real accounts whose clients create rooms,
//! invite the bot and write; what the bot sent is read back from the rooms' timelines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{FakeChat, FakePlatform, Posted, SentMessage};
use crate::matrix::{MatrixUser, Synapse};

/// Parts the channel is set to send at most (so the suite's long reply needs several).
const MAX_CHARS: usize = 4_000;

/// The Matrix homeserver, driven.
pub struct FakeMatrix {
    synapse: Mutex<Synapse>,
    base: String,
    bot: MatrixUser,
    robot: MatrixUser,
    users: Vec<MatrixUser>,
    /// A second person for group rooms.
    bystander: MatrixUser,
    rooms: Mutex<HashMap<(u32, bool), String>>,
}

impl FakeMatrix {
    pub async fn start() -> FakeMatrix {
        let synapse = tokio::task::block_in_place(Synapse::start);
        let bot = synapse.register("andy", false).await;
        let robot = synapse.register("robot", false).await;
        let bystander = synapse.register("bystander", false).await;
        let mut users = Vec::new();
        for n in 1..=4 {
            users.push(synapse.register(&format!("user{n}"), false).await);
        }
        FakeMatrix {
            base: synapse.base.clone(),
            synapse: Mutex::new(synapse),
            bot,
            robot,
            users,
            bystander,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    fn user(&self, chat: &FakeChat) -> &MatrixUser {
        self.users
            .iter()
            .find(|u| u.user_id == chat.user_id)
            .expect("a user of this driver")
    }

    /// The room for chat `n` (made on first use, once the bot and everyone have joined).
    async fn room(&self, n: u32, is_group: bool) -> String {
        if let Some(room) = self.rooms.lock().unwrap().get(&(n, is_group)) {
            return room.clone();
        }
        let owner = &self.users[(n as usize - 1) % self.users.len()];
        let mut invite = vec![self.bot.user_id.as_str()];
        if is_group {
            invite.push(self.bystander.user_id.as_str());
            invite.push(self.robot.user_id.as_str());
        }
        let room = owner.create_room(&invite, !is_group).await;
        let mut want = 2;
        if is_group {
            self.bystander.join(&room).await;
            self.robot.join(&room).await;
            want = 4;
        }
        let mut joined = false;
        for _ in 0..600 {
            if owner.joined_members(&room).await == want {
                joined = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(joined, "the bot did not join {room}");
        self.rooms
            .lock()
            .unwrap()
            .insert((n, is_group), room.clone());
        room
    }
}

#[async_trait]
impl FakePlatform for FakeMatrix {
    fn channel(&self) -> &'static str {
        "matrix"
    }

    fn settings_toml(&self) -> String {
        format!(
            "enabled = true\nhomeserver = \"{}\"\ninvites_from = [\":localhost\"]\nsync_timeout_secs = 5\nmax_message_chars = {MAX_CHARS}\n",
            self.base
        )
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![("matrix.access_token".into(), self.bot.token.clone())]
    }

    fn max_message_len(&self) -> usize {
        MAX_CHARS
    }

    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        let room = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.room(n, is_group))
        });
        let owner = &self.users[(n as usize - 1) % self.users.len()];
        FakeChat {
            platform_id: room,
            is_group,
            user_id: owner.user_id.clone(),
            user_name: owner.user_id.clone(),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        let user = self.user(chat);
        let mention = (mention && chat.is_group).then_some(self.bot.user_id.as_str());
        let id = user.say(&chat.platform_id, text, mention).await;
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: id,
        }
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        let user = self.user(chat);
        let mxc = user.upload(file_name, data).await;
        let mut content = json!({
            "msgtype": "m.file", "body": caption, "filename": file_name, "url": mxc,
            "info": {"mimetype": "application/octet-stream", "size": data.len()},
        });
        if chat.is_group {
            content["m.mentions"] = json!({"user_ids": [self.bot.user_id]});
        }
        let id = user.send(&chat.platform_id, content).await;
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: id,
        }
    }

    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        // Programs speak in m.notice.
        if !chat.is_group {
            self.user(chat)
                .invite(&chat.platform_id, &self.robot.user_id)
                .await;
            self.robot.join(&chat.platform_id).await;
        }
        let id = self
            .robot
            .send(
                &chat.platform_id,
                json!({"msgtype": "m.notice", "body": format!("{}: {text}", self.bot.user_id),
                    "m.mentions": {"user_ids": [self.bot.user_id]}}),
            )
            .await;
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: id,
        }
    }

    async fn redeliver(&self, _chat: &FakeChat, _message: &Posted) {
        panic!(
            "a homeserver does not deliver an event twice on request; see the matrix entry in the conformance suite"
        );
    }

    async fn push_malformed(&self, chat: &FakeChat) {
        let user = self.user(chat);
        let room = &chat.platform_id;
        // Wrong types, missing fields, an unknown message type, an edit of nothing. The
        // homeserver refuses some shapes itself; enough of them get through.
        let garbage = [
            (
                "m.room.message",
                json!({"msgtype": 5, "body": "msgtype is a number"}),
            ),
            ("m.room.message", json!({"body": ["not", "text"]})),
            (
                "m.room.message",
                json!({"msgtype": "m.image", "body": "img", "url": 7}),
            ),
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "* edit",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$nothing"}}),
            ),
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "x",
                "m.relates_to": "not an object", "m.mentions": {"user_ids": "nope"}}),
            ),
            ("org.example.custom", json!({"x": 1})),
        ];
        let mut accepted = 0;
        for (kind, content) in garbage {
            if user.try_send_event(room, kind, content).await.is_some() {
                accepted += 1;
            }
        }
        assert!(accepted >= 3, "the homeserver refused the malformed events");
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let user = self.user(chat);
        let mut out = Vec::new();
        for event in user.messages(&chat.platform_id).await {
            if event["sender"] != self.bot.user_id.as_str() {
                continue;
            }
            let content = &event["content"];
            let body = content["body"].as_str().unwrap_or_default().to_owned();
            let relates = &content["m.relates_to"];
            let (text, files) = if content["msgtype"] == "m.file" {
                let data = user
                    .download(content["url"].as_str().unwrap_or_default())
                    .await;
                let name = content["filename"].as_str().unwrap_or(&body).to_owned();
                (String::new(), vec![(name, data)])
            } else {
                (body, Vec::new())
            };
            out.push(SentMessage {
                chat: chat.platform_id.clone(),
                text,
                files,
                thread: (relates["rel_type"] == "m.thread")
                    .then(|| relates["event_id"].as_str().unwrap_or_default().to_owned()),
                reply_to: relates["m.in_reply_to"]["event_id"]
                    .as_str()
                    .map(str::to_owned),
            });
        }
        out
    }

    async fn drop_connections(&self) {
        let mut synapse = self.synapse.lock().unwrap();
        tokio::task::block_in_place(|| synapse.restart());
    }

    fn connections(&self) -> u64 {
        // Each sync long poll is a request the homeserver logs with the bot's id.
        let log = self.synapse.lock().unwrap().log();
        log.lines()
            .filter(|l| l.contains("/sync") && l.contains(&self.bot.user_id))
            .count() as u64
    }

    fn rate_limit_sends(&self, _count: u32, _retry_after: Duration) {
        panic!("see the matrix entry in the conformance suite");
    }

    fn rate_limit_log(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        Vec::new()
    }

    fn hold_sends(&self) {
        panic!("see the matrix entry in the conformance suite");
    }

    fn release_sends(&self) {}

    fn held_sends(&self) -> usize {
        0
    }
}
