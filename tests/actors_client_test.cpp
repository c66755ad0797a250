// msiv2::client with its own actor_system (real threads): the real token_service and
// supervisor, doubles for the peers that talk to the network.

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include <caf/event_based_actor.hpp>

#include "actors/client.hpp"
#include "actors/token_service.hpp"
#include "io/fake_transport.hpp"
#include "platform/files.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

struct peers {
  std::shared_ptr<platform::wall_clock> wall = platform::system_wall_clock();
  std::atomic<int> exchanges{0};
  std::atomic<bool> hold{false};
  std::promise<void> first_exchange;
};

caf::behavior peer_double(caf::event_based_actor* self, std::shared_ptr<peers> p) {
  auto held = std::make_shared<std::vector<caf::response_promise>>();
  return {
    [=](wire_atom, wiring_ptr) {},
    [=](probe_atom, deadline) { return imds_source::v2; },
    [=](caf::get_atom, credential_request& req) {
      auto c = std::make_shared<credential>();
      c->identity = req.identity;
      c->x5t_s256 = "x5t-A";
      return credential_ptr{c};
    },
    [=](exchange_atom, exchange_request& req) -> caf::result<token_result> {
      int n = ++p->exchanges;
      if (n == 1)
        p->first_exchange.set_value();
      if (p->hold) {
        held->push_back(self->make_response_promise());
        return held->back();
      }
      token_result t;
      t.access_token = "token-" + std::to_string(n);
      t.expires_on = p->wall->now_s() + 3600;
      t.correlation_id = req.request.correlation_id; // as token_exchanger does
      return t;
    },
    [=](schedule_atom, std::string&, std::int64_t, caf::actor&) {},
    [=](cancel_atom, std::string&) {},
  };
}

client_options options(std::shared_ptr<peers> p) {
  client_options o;
  o.config = module_config{};
  o.config.imds_base_url = "http://127.0.0.1:9";
  o.transport = std::make_shared<io::fake_transport>();
  for (std::size_t i = 0; i < actor_role_count; ++i)
    if (static_cast<actor_role>(i) != actor_role::service)
      o.factories.make[i] = [p](caf::actor_system& sys, deps_ptr) {
        return caf::actor_cast<caf::actor>(sys.spawn(peer_double, p));
      };
  o.shutdown_timeout = 5s;
  return o;
}

struct text_sink final : platform::log_sink {
  void write(platform::log_level, std::string_view, std::string_view message) override {
    std::lock_guard<std::mutex> g(mtx);
    text.append(message).append("\n");
  }
  std::string all() {
    std::lock_guard<std::mutex> g(mtx);
    return text;
  }
  std::mutex mtx;
  std::string text;
};

token_request pop() {
  token_request r;
  r.resource = "https://vault.azure.net";
  r.timeout = 5s;
  return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_client_test)

BOOST_AUTO_TEST_CASE(get_token_blocking_returns_a_token_then_serves_it_from_the_cache) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE_MESSAGE(c, (c ? "" : c.error()));
  auto a = (*c)->get_token_blocking(pop());
  BOOST_REQUIRE_MESSAGE(a, (a ? std::string() : render(a.error())));
  BOOST_CHECK_EQUAL(a->access_token, "token-1");
  BOOST_CHECK(a->source == token_source::network);
  auto b = (*c)->get_token_blocking(pop());
  BOOST_REQUIRE(b);
  BOOST_CHECK(b->source == token_source::cache);
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
  auto s = (*c)->stats();
  BOOST_CHECK_EQUAL(s.counters["msiv2_cache_hits_total{artifact=\"access_token\"}"], 1u);
}

// Review M5: a per-boot private key is not written to persistent disk unless asked for.
BOOST_AUTO_TEST_CASE(a_cache_dir_on_persistent_disk_is_not_used_unless_asked) {
  // The build directory is on disk (CI's /tmp may be tmpfs).
  auto base = std::filesystem::current_path() / ("client-persist-" + std::to_string(::getpid()));
  if (platform::on_memory_filesystem(base.string())) {
    BOOST_TEST_MESSAGE("skipped: " << base << " is on a memory file system here");
    return;
  }
  struct cleanup {
    std::filesystem::path p;
    ~cleanup() { std::filesystem::remove_all(p); }
  } guard{base};
  auto sink = std::make_shared<text_sink>();
  {
    auto o = options(std::make_shared<peers>());
    o.config.cache_dir = (base / "off").string();
    o.log = sink;
    auto c = client::create(std::move(o));
    BOOST_REQUIRE(c);
  }
  BOOST_CHECK(!std::filesystem::exists(base / "off")); // nothing made, nothing written
  BOOST_CHECK(sink->all().find("not on a memory file system") != std::string::npos);
  {
    auto o = options(std::make_shared<peers>());
    o.config.cache_dir = (base / "on").string();
    o.config.persist_key_on_disk = true;
    auto c = client::create(std::move(o));
    BOOST_REQUIRE(c);
  }
  BOOST_CHECK(std::filesystem::exists(base / "on" / "locks")); // asked for: the store is there
  {
    // The tpm store writes only a blob wrapped by the TPM: its directory is used on disk too
    // (no TPM is opened before the first key request, so none is needed here).
    auto tpm_sink = std::make_shared<text_sink>();
    auto o = options(std::make_shared<peers>());
    o.config.cache_dir = (base / "tpm").string();
    o.config.key_store = key_store_choice::tpm;
    o.config.tpm_tcti = "swtpm:host=127.0.0.1,port=1";
    o.log = tpm_sink;
    auto c = client::create(std::move(o));
    BOOST_REQUIRE(c);
    BOOST_CHECK(tpm_sink->all().find("not on a memory file system") == std::string::npos);
  }
  BOOST_CHECK(std::filesystem::exists(base / "tpm" / "locks"));
  BOOST_CHECK(!platform::on_memory_filesystem("/proc/self"));
  if (std::filesystem::exists("/dev/shm"))
    BOOST_CHECK(platform::on_memory_filesystem("/dev/shm/msiv2-not-there/x"));
}

BOOST_AUTO_TEST_CASE(get_token_calls_back_once_on_a_module_thread) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  std::promise<std::pair<token_outcome, std::thread::id>> got;
  (*c)->get_token(pop(), [&](token_outcome t) {
    got.set_value({std::move(t), std::this_thread::get_id()});
  });
  auto f = got.get_future();
  BOOST_REQUIRE(f.wait_for(10s) == std::future_status::ready);
  auto [t, tid] = f.get();
  BOOST_REQUIRE(t);
  BOOST_CHECK_EQUAL(t->access_token, "token-1");
  BOOST_CHECK(tid != std::this_thread::get_id());
}

BOOST_AUTO_TEST_CASE(invalid_request_comes_back_as_an_error) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  auto r = pop();
  r.resource.clear();
  auto t = (*c)->get_token_blocking(r);
  BOOST_REQUIRE(!t);
  BOOST_CHECK(describe(t.error()).code == error_code::invalid_request);
}

BOOST_AUTO_TEST_CASE(destructor_answers_pending_callbacks_with_shutting_down) {
  auto p = std::make_shared<peers>();
  p->hold = true;
  std::promise<token_outcome> got;
  {
    auto c = client::create(options(p));
    BOOST_REQUIRE(c);
    (*c)->get_token(pop(), [&](token_outcome t) { got.set_value(std::move(t)); });
    BOOST_REQUIRE(p->first_exchange.get_future().wait_for(10s) == std::future_status::ready);
  }
  auto f = got.get_future();
  BOOST_REQUIRE(f.wait_for(0s) == std::future_status::ready);
  auto t = f.get();
  BOOST_REQUIRE(!t);
  BOOST_CHECK(describe(t.error()).code == error_code::shutting_down);
}

BOOST_AUTO_TEST_CASE(try_cached_misses_until_a_token_is_cached_then_serves_it_without_a_message) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  BOOST_CHECK(!(*c)->try_cached(pop()));
  auto a = (*c)->get_token_blocking(pop());
  BOOST_REQUIRE(a);
  auto hit = (*c)->try_cached(pop());
  BOOST_REQUIRE(hit);
  BOOST_CHECK_EQUAL(hit->access_token, "token-1");
  BOOST_CHECK(hit->source == token_source::cache);
  auto scoped = pop();
  scoped.resource += "/.default";
  BOOST_CHECK((*c)->try_cached(scoped));
  auto bearer = pop();
  bearer.type = token_type::bearer;
  BOOST_CHECK(!(*c)->try_cached(bearer));
  auto claims = pop();
  claims.claims = R"({"access_token":{"nbf":{"essential":true,"value":"1"}}})";
  BOOST_CHECK(!(*c)->try_cached(claims));
  auto forced = pop();
  forced.force_refresh = true;
  BOOST_CHECK(!(*c)->try_cached(forced));
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
  auto s = (*c)->stats();
  BOOST_CHECK_EQUAL(s.counters["msiv2_cache_hits_total{artifact=\"access_token\"}"], 2u);
}

BOOST_AUTO_TEST_CASE(get_token_serves_a_cached_token_on_the_calling_thread_before_returning) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  BOOST_REQUIRE((*c)->get_token_blocking(pop()));
  std::optional<token_outcome> got;
  std::thread::id tid;
  (*c)->get_token(pop(), [&](token_outcome t) {
    got = std::move(t);
    tid = std::this_thread::get_id();
  });
  BOOST_REQUIRE(got);
  BOOST_REQUIRE(*got);
  BOOST_CHECK_EQUAL((*got)->access_token, "token-1");
  BOOST_CHECK((*got)->source == token_source::cache);
  BOOST_CHECK(tid == std::this_thread::get_id());
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
}

BOOST_AUTO_TEST_CASE(callbacks_that_ask_again_from_a_cached_hit_nest_only_a_few_levels_deep) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  BOOST_REQUIRE((*c)->get_token_blocking(pop()));
  // A chain of 200 calls, each asked from the previous one's callback: served on the
  // caller's thread up to a bounded depth, then through the module, never a deep stack.
  // Each call happens after the previous callback started, so the plain counters are never
  // touched by two threads at once; the nesting depth is per thread.
  struct chain_state {
    client* cl = nullptr;
    int left = 200;
    std::atomic<int> deepest{0};
    int failures = 0;
    std::promise<void> done;
  };
  auto st = std::make_shared<chain_state>();
  st->cl = c->get();
  std::function<void()> next;
  next = [st, &next] {
    st->cl->get_token(pop(), [st, &next](token_outcome t) {
      static thread_local int depth = 0;
      ++depth;
      if (depth > st->deepest.load())
        st->deepest.store(depth);
      if (!t)
        ++st->failures;
      bool last = --st->left == 0;
      if (!last)
        next();
      --depth;
      if (last)
        st->done.set_value();
    });
  };
  next();
  BOOST_REQUIRE(st->done.get_future().wait_for(10s) == std::future_status::ready);
  BOOST_CHECK_EQUAL(st->failures, 0);
  BOOST_CHECK_LE(st->deepest.load(), 9);
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
}

BOOST_AUTO_TEST_CASE(a_cached_token_never_reaches_a_request_asking_a_stronger_binding) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p)); // software keys
  BOOST_REQUIRE(c);
  BOOST_REQUIRE((*c)->get_token_blocking(pop()));
  auto strong = pop();
  strong.min_binding = binding_strength::hardware_key;
  BOOST_CHECK(!(*c)->try_cached(strong));
  auto blocking = (*c)->get_token_blocking(strong);
  BOOST_REQUIRE(!blocking);
  BOOST_CHECK(describe(blocking.error()).code == error_code::binding_too_weak);
  std::promise<token_outcome> answered;
  (*c)->get_token(strong, [&](token_outcome t) { answered.set_value(std::move(t)); });
  auto f = answered.get_future();
  BOOST_REQUIRE(f.wait_for(10s) == std::future_status::ready);
  auto cb = f.get();
  BOOST_REQUIRE(!cb);
  BOOST_CHECK(describe(cb.error()).code == error_code::binding_too_weak);
  // What the key store gives is still served from the snapshot.
  auto met = pop();
  met.min_binding = binding_strength::software_key;
  BOOST_CHECK((*c)->try_cached(met));
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
}

BOOST_AUTO_TEST_CASE(a_snapshot_hit_names_the_correlation_id_of_the_calls_that_got_the_token) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  auto first = pop();
  first.correlation_id = "first-request";
  auto a = (*c)->get_token_blocking(first);
  BOOST_REQUIRE(a);
  BOOST_CHECK_EQUAL(a->correlation_id, "first-request");
  auto later = pop();
  later.correlation_id = "later-request";
  auto hit = (*c)->try_cached(later);
  BOOST_REQUIRE(hit);
  BOOST_CHECK_EQUAL(hit->correlation_id, "first-request");
  std::optional<token_outcome> inline_hit;
  (*c)->get_token(later, [&](token_outcome t) { inline_hit = std::move(t); });
  BOOST_REQUIRE(inline_hit && *inline_hit);
  BOOST_CHECK_EQUAL((*inline_hit)->correlation_id, "first-request");
  BOOST_CHECK_EQUAL(p->exchanges.load(), 1);
}

BOOST_AUTO_TEST_CASE(capabilities_still_answer_beside_the_snapshot_path) {
  auto p = std::make_shared<peers>();
  auto c = client::create(options(p));
  BOOST_REQUIRE(c);
  auto caps = (*c)->capabilities();
  BOOST_REQUIRE(caps);
  BOOST_CHECK(caps->imds == imds_availability::v2);
  BOOST_CHECK(caps->strongest == binding_strength::software_key);
}

BOOST_AUTO_TEST_SUITE_END()
