//! The paper's 16 applications as the harness sees them: which suite and project each belongs to, how many
//! functions it has, and how its inputs are drawn.
//!
//! Inputs come from the project's own data set (its seed file), drawn from seeded distributions with realistic
//! repetition: Zipf over users, routes, places, items, orders and keys. Memo hit rates come out of that repetition,
//! not from a knob. The one knob is `minority`: the share of FaaSChain requests that take an application's
//! synthetic minority path (a wrong password, a declined card, a place with no hotel), with fresh values that no
//! table can have seen, as the paper made those branch outcomes synthetic at about 90% one way.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{Map, Value, json};

/// The Zipf exponent of every popularity distribution.
pub const ZIPF_S: f64 = 1.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suite {
    FaaSChain,
    TrainTicket,
    Alibaba,
}

impl Suite {
    pub const ALL: [Suite; 3] = [Suite::FaaSChain, Suite::TrainTicket, Suite::Alibaba];

    pub fn name(self) -> &'static str {
        match self {
            Suite::FaaSChain => "FaaSChain",
            Suite::TrainTicket => "TrainTicket",
            Suite::Alibaba => "Alibaba",
        }
    }

    /// The project directory under `examples/paper`, and the namespace the harness deploys it to.
    pub fn dir(self) -> &'static str {
        match self {
            Suite::FaaSChain => "faaschain",
            Suite::TrainTicket => "trainticket",
            Suite::Alibaba => "alibaba",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct App {
    pub suite: Suite,
    /// The application's name in its project.
    pub name: &'static str,
    /// The paper's name for it.
    pub label: &'static str,
    /// The prefix its functions' names share in the project.
    pub prefix: &'static str,
}

pub const APPS: [App; 16] = [
    App { suite: Suite::FaaSChain, name: "login", label: "Login", prefix: "login_" },
    App { suite: Suite::FaaSChain, name: "banking", label: "Banking", prefix: "bank_" },
    App { suite: Suite::FaaSChain, name: "flightbook", label: "FlightBook", prefix: "fb_" },
    App { suite: Suite::FaaSChain, name: "hotelbook", label: "HotelBook", prefix: "hb_" },
    App { suite: Suite::FaaSChain, name: "smarth", label: "SmartH", prefix: "sh_" },
    App { suite: Suite::FaaSChain, name: "onlpurch", label: "OnlPurch", prefix: "op_" },
    App { suite: Suite::TrainTicket, name: "tcktapp", label: "TcktApp", prefix: "tk_" },
    App { suite: Suite::TrainTicket, name: "tripinfapp", label: "TripInfApp", prefix: "ti_" },
    App { suite: Suite::TrainTicket, name: "querytrvl", label: "QueryTrvl", prefix: "qt_" },
    App { suite: Suite::TrainTicket, name: "getleftapp", label: "GetLeftApp", prefix: "gl_" },
    App { suite: Suite::TrainTicket, name: "cancelapp", label: "CancelApp", prefix: "ca_" },
    App { suite: Suite::Alibaba, name: "ali1", label: "Ali-1", prefix: "ali1_" },
    App { suite: Suite::Alibaba, name: "ali2", label: "Ali-2", prefix: "ali2_" },
    App { suite: Suite::Alibaba, name: "ali3", label: "Ali-3", prefix: "ali3_" },
    App { suite: Suite::Alibaba, name: "ali4", label: "Ali-4", prefix: "ali4_" },
    App { suite: Suite::Alibaba, name: "ali5", label: "Ali-5", prefix: "ali5_" },
];

impl App {
    pub fn project(&self, examples: &Path) -> PathBuf {
        examples.join("paper").join(self.suite.dir())
    }

    /// Whether the application has a synthetic branch the `minority` knob drives (the paper's Fig. 14 apps).
    pub fn synthetic(&self) -> bool {
        self.suite == Suite::FaaSChain
    }
}

/// A popularity distribution over `n` things: index 0 is the most popular.
struct Popular(Zipf<f64>);

impl Popular {
    fn new(n: usize) -> Popular {
        Popular(Zipf::new(n.max(1) as f64, ZIPF_S).expect("a valid Zipf distribution"))
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        self.0.sample(rng) as usize - 1
    }
}

/// Draws an application's inputs from its data set.
pub struct Inputs {
    app: App,
    rng: StdRng,
    minority: f64,
    seed: Map<String, Value>,
    /// Keys of the data set with a prefix, sorted, without the prefix.
    lists: std::collections::HashMap<&'static str, Vec<String>>,
}

impl Inputs {
    pub fn new(app: App, seed: Map<String, Value>, rng_seed: u64, minority: f64) -> Inputs {
        let mut lists = std::collections::HashMap::new();
        for prefix in ["user:", "contacts:", "flights:", "item:", "trips:", "order:", "hotel:"] {
            let mut keys: Vec<String> =
                seed.keys().filter_map(|k| k.strip_prefix(prefix)).map(str::to_string).collect();
            keys.sort();
            lists.insert(prefix, keys);
        }
        Inputs { app, rng: StdRng::seed_from_u64(rng_seed), minority, seed, lists }
    }

    fn popular(&mut self, list: &str) -> String {
        let items = &self.lists[list];
        assert!(!items.is_empty(), "the data set of {} has no {list} keys", self.app.name);
        let i = Popular::new(items.len()).pick(&mut self.rng);
        items[i.min(items.len() - 1)].clone()
    }

    fn minority(&mut self) -> bool {
        self.rng.random_bool(self.minority)
    }

    fn field(&self, key: &str, field: &str) -> Value {
        self.seed.get(key).and_then(|v| v.get(field)).cloned().unwrap_or(Value::Null)
    }

    /// A user, with the password the data set's generator gave them (`pw-` and the number).
    fn user(&mut self) -> (String, String) {
        let user = self.popular("user:");
        let password = format!("pw-{}", user.trim_start_matches('u'));
        (user, password)
    }

    /// A password no user has: the login fails, and no table has seen it.
    fn wrong_password(&mut self) -> String {
        format!("wrong-{:016x}", self.rng.random::<u64>())
    }

    /// A card number that fails the Luhn check, never seen before.
    fn declined_card(&mut self) -> String {
        loop {
            let card = format!("4{:015}", self.rng.random_range(0..10u64.pow(15)));
            if !luhn_ok(&card) {
                return card;
            }
        }
    }

    /// The next input.
    pub fn draw(&mut self) -> Value {
        let date = format!("2026-12-0{}", 1 + Popular::new(5).pick(&mut self.rng));
        match self.app.name {
            "login" | "smarth" | "banking" => {
                let (user, mut password) = self.user();
                if self.minority() {
                    password = self.wrong_password();
                }
                let n = user.trim_start_matches('u');
                match self.app.name {
                    "login" => json!({"user": user, "password": password}),
                    "banking" => {
                        let amount = [20, 50, 100, 200, 500][self.rng.random_range(0..5)];
                        json!({"user": user, "password": password, "account": format!("a{n}"), "amount": amount})
                    }
                    _ => {
                        let home = format!("h{:02}", Popular::new(20).pick(&mut self.rng));
                        let room = ["living", "bedroom", "kitchen", "office"][self.rng.random_range(0..4)];
                        json!({"user": user, "password": password, "home": home, "room": room})
                    }
                }
            }
            "flightbook" => {
                let (user, _) = self.user();
                let route = self.popular("flights:");
                let (from, to) = route.split_once(':').expect("flights:FROM:TO");
                let mut card = self.field(&format!("user:{user}"), "card");
                if self.minority() {
                    card = json!(self.declined_card());
                }
                json!({"user": user, "from": from, "to": to, "date": date, "card": card})
            }
            "hotelbook" => {
                let (user, _) = self.user();
                let nights = self.rng.random_range(1..=3);
                let (lat, lon) = if self.minority() {
                    // Somewhere in the South Atlantic: no hotel within 50 km.
                    (self.rng.random_range(-50.0..-40.0), self.rng.random_range(-30.0..-20.0))
                } else {
                    // Near a hotel: users search from a few popular spots.
                    let hotel = self.popular("hotel:");
                    let key = format!("hotel:{hotel}");
                    let lat = self.field(&key, "lat").as_f64().unwrap_or(0.0) + 0.01;
                    let lon = self.field(&key, "lon").as_f64().unwrap_or(0.0) - 0.01;
                    ((lat * 1000.0).round() / 1000.0, (lon * 1000.0).round() / 1000.0)
                };
                json!({"user": user, "lat": lat, "lon": lon, "nights": nights})
            }
            "onlpurch" => {
                let (user, password) = self.user();
                let item = self.popular("item:");
                let mut card = self.field(&format!("user:{user}"), "card");
                if self.minority() {
                    card = json!(self.declined_card());
                }
                let qty = self.rng.random_range(1..=2);
                json!({"user": user, "password": password, "item": item, "qty": qty, "card": card})
            }
            "tcktapp" | "tripinfapp" | "querytrvl" | "getleftapp" => {
                let pair = self.popular("trips:");
                let (from, to) = pair.split_once(':').expect("trips:FROM:TO");
                let name = |id: &str| self.seed.get(&format!("station_name:{id}")).cloned().unwrap_or(Value::Null);
                let (from, to) = (name(from), name(to));
                match self.app.name {
                    "getleftapp" => json!({"trips": self.seed[&format!("trips:{pair}")], "date": date}),
                    "tripinfapp" => {
                        let user = self.popular("contacts:");
                        json!({"from": from, "to": to, "date": date, "user": user})
                    }
                    _ => json!({"from": from, "to": to, "date": date}),
                }
            }
            "cancelapp" => {
                let order = self.popular("order:");
                let user = self.field(&format!("order:{order}"), "user");
                json!({"order": order, "user": user})
            }
            _ => json!({"key": Popular::new(200).pick(&mut self.rng)}),
        }
    }
}

fn luhn_ok(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d > 4 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_a_valid_number_and_declined_cards_fail_it() {
        assert!(luhn_ok("4539578763621486"));
        assert!(!luhn_ok("4539578763621487"));
        let app = APPS[2];
        let mut inputs = Inputs::new(app, Map::new(), 1, 1.0);
        for _ in 0..20 {
            assert!(!luhn_ok(&inputs.declined_card()));
        }
    }

    #[test]
    fn popular_things_repeat_and_the_minority_is_fresh() {
        let mut seed = Map::new();
        for i in 0..100 {
            seed.insert(format!("user:u{i:03}"), json!({}));
        }
        let mut inputs = Inputs::new(APPS[0], seed, 7, 0.1);
        let drawn: Vec<Value> = (0..1000).map(|_| inputs.draw()).collect();
        let distinct: std::collections::HashSet<String> = drawn.iter().map(|v| v.to_string()).collect();
        let wrong = drawn.iter().filter(|v| v["password"].as_str().unwrap().starts_with("wrong-")).count();
        assert!(distinct.len() < 300, "Zipf repeats inputs: {} distinct of 1000", distinct.len());
        assert!((50..150).contains(&wrong), "about 10% take the minority path: {wrong}");
        assert_eq!(drawn[0], Inputs::new(APPS[0], inputs.seed.clone(), 7, 0.1).draw(), "seeded");
    }
}
