#include <boost/test/unit_test.hpp>

#include <chrono>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "actors/key_manager.hpp"
#include "actors/software_key_store.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/keys.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

/// A key store that holds every call until the test completes it (a slow key generation).
class deferred_key_store : public key_store {
public:
  void load_or_create(std::function<void(result<key_ref>)> done) override {
    calls.push_back({"create", std::move(done)});
  }
  void rotate(std::string key_id, std::function<void(result<key_ref>)> done) override {
    calls.push_back({"rotate " + key_id, std::move(done)});
  }
  struct call {
    std::string what;
    std::function<void(result<key_ref>)> done;
  };
  std::vector<call> calls;
};

struct key_fixture : test::actor_fixture {
  key_manager spawn(std::shared_ptr<key_store> store = nullptr) {
    auto d = std::make_shared<runtime_deps>(*deps());
    if (store)
      d->keys = std::move(store);
    return keep(sys.spawn(key_manager_impl, deps_ptr(d)));
  }

  /// The key `km` makes first, then the one a rotation of it gives.
  std::pair<key_ref, key_ref> create_then_rotate(const key_manager& km) {
    auto first = request<key_ref>(km, caf::get_atom::value);
    run();
    BOOST_REQUIRE(first->value);
    auto rotated = request<key_ref>(km, rotate_atom::value, first->value->key_id);
    run();
    BOOST_REQUIRE(rotated->value);
    return {*first->value, *rotated->value};
  }
};

key_ref fresh_key() {
  auto k = make_software_key();
  BOOST_REQUIRE(k);
  return *k;
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_key_manager_test)

BOOST_FIXTURE_TEST_CASE(one_creation_for_n_concurrent_gets, key_fixture) {
  auto km = spawn();
  std::vector<std::shared_ptr<test::outcome<key_ref>>> got;
  for (int i = 0; i < 8; ++i)
    got.push_back(request<key_ref>(km, caf::get_atom::value));
  run();
  BOOST_CHECK_EQUAL(keys->creates, 1);
  for (auto& g : got) {
    BOOST_REQUIRE(g->value);
    BOOST_CHECK_EQUAL(g->value->key_id, got.front()->value->key_id);
    BOOST_CHECK(g->value->key);
  }
}

BOOST_FIXTURE_TEST_CASE(concurrent_gets_wait_for_the_one_slow_creation, key_fixture) {
  auto store = std::make_shared<deferred_key_store>();
  auto km = spawn(store);
  std::vector<std::shared_ptr<test::outcome<key_ref>>> got;
  for (int i = 0; i < 5; ++i)
    got.push_back(request<key_ref>(km, caf::get_atom::value));
  run();
  BOOST_REQUIRE_EQUAL(store->calls.size(), 1u);
  for (auto& g : got)
    BOOST_CHECK(!g->answered());
  auto k = fresh_key();
  store->calls[0].done(k);
  run();
  for (auto& g : got) {
    BOOST_REQUIRE(g->value);
    BOOST_CHECK_EQUAL(g->value->key_id, k.key_id);
  }
  // Later gets are served from memory.
  auto again = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_REQUIRE(again->value);
  BOOST_CHECK_EQUAL(store->calls.size(), 1u);
}

BOOST_FIXTURE_TEST_CASE(rotate_replaces_only_the_current_key, key_fixture) {
  auto km = spawn();
  const auto [first, rotated] = create_then_rotate(km);
  BOOST_CHECK_NE(rotated.key_id, first.key_id);
  BOOST_CHECK_EQUAL(keys->rotations, 1);
  // A late report about the old key returns the current one and rotates nothing.
  auto stale = request<key_ref>(km, rotate_atom::value, first.key_id);
  run();
  BOOST_REQUIRE(stale->value);
  BOOST_CHECK_EQUAL(stale->value->key_id, rotated.key_id);
  BOOST_CHECK_EQUAL(keys->rotations, 1);
  auto now = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_REQUIRE(now->value);
  BOOST_CHECK_EQUAL(now->value->key_id, rotated.key_id);
  BOOST_CHECK_EQUAL(stats->snapshot().counters["msiv2_renewals_total{artifact=\"binding_key\"}"], 1u);
}

// Review M6: an upstream that keeps answering "another key" rotates once per 10 minutes.
BOOST_FIXTURE_TEST_CASE(rotations_are_limited_to_one_per_ten_minutes, key_fixture) {
  auto km = spawn();
  const auto [first, rotated] = create_then_rotate(km);
  BOOST_CHECK_EQUAL(keys->rotations, 1);
  for (int i = 0; i < 20; ++i) { // the new key is "refused" again and again
    auto again = request<key_ref>(km, rotate_atom::value, rotated.key_id);
    advance(std::chrono::seconds(29));
    BOOST_REQUIRE(again->value);
    BOOST_CHECK_EQUAL(again->value->key_id, rotated.key_id);
  }
  BOOST_CHECK_EQUAL(keys->rotations, 1);
  BOOST_CHECK_EQUAL(stats->snapshot().counters["msiv2_rotations_refused_total"], 20u);
  advance(std::chrono::seconds(21)); // 10 minutes after the first rotation
  auto later = request<key_ref>(km, rotate_atom::value, rotated.key_id);
  run();
  BOOST_REQUIRE(later->value);
  BOOST_CHECK_NE(later->value->key_id, rotated.key_id);
  BOOST_CHECK_EQUAL(keys->rotations, 2);
}

BOOST_FIXTURE_TEST_CASE(key_store_failure_is_key_failed_for_every_waiter, key_fixture) {
  auto store = std::make_shared<deferred_key_store>();
  auto km = spawn(store);
  auto a = request<key_ref>(km, caf::get_atom::value);
  auto b = request<key_ref>(km, caf::get_atom::value);
  auto c = request<key_ref>(km, rotate_atom::value, std::string("unknown"));
  run();
  BOOST_REQUIRE_EQUAL(store->calls.size(), 1u);
  store->calls[0].done(fail("no entropy"));
  run();
  for (auto& g : {a, b, c}) {
    BOOST_REQUIRE(g->error);
    auto info = describe(g->error);
    BOOST_CHECK(info.code == error_code::key_failed);
    BOOST_CHECK_NE(info.description.find("no entropy"), std::string::npos);
  }
  // The next get tries again.
  auto retry = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_CHECK_EQUAL(store->calls.size(), 2u);
  store->calls[1].done(fresh_key());
  run();
  BOOST_CHECK(retry->value);
}

BOOST_FIXTURE_TEST_CASE(inline_key_store_failure_reaches_the_caller, key_fixture) {
  keys->fail_next = "disk on fire";
  auto km = spawn();
  auto got = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(describe(got->error).code == error_code::key_failed);
}

BOOST_FIXTURE_TEST_CASE(waiters_are_answered_when_the_key_manager_stops, key_fixture) {
  auto store = std::make_shared<deferred_key_store>();
  auto km = spawn(store);
  auto got = request<key_ref>(km, caf::get_atom::value);
  run();
  caf::anon_send_exit(km, caf::exit_reason::user_shutdown);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(describe(got->error).code == error_code::shutting_down);
}

BOOST_FIXTURE_TEST_CASE(without_eager_key_nothing_is_asked_at_start, key_fixture) {
  BOOST_REQUIRE(!module_config{}.eager_key); // the default-constructed config stays lazy
  auto store = std::make_shared<deferred_key_store>();
  spawn(store);
  run();
  advance(10s);
  BOOST_CHECK(store->calls.empty());
}

BOOST_FIXTURE_TEST_CASE(eager_key_is_asked_for_once_at_start_and_the_first_get_joins_it,
                        key_fixture) {
  config.eager_key = true;
  auto store = std::make_shared<deferred_key_store>();
  auto km = spawn(store);
  run();
  BOOST_REQUIRE_EQUAL(store->calls.size(), 1u);
  BOOST_CHECK_EQUAL(store->calls[0].what, "create");
  // Gets while the eager call is in flight join it: still one creation.
  auto a = request<key_ref>(km, caf::get_atom::value);
  auto b = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_CHECK_EQUAL(store->calls.size(), 1u);
  BOOST_CHECK(!a->answered());
  auto k = fresh_key();
  store->calls[0].done(k);
  run();
  for (auto& g : {a, b}) {
    BOOST_REQUIRE(g->value);
    BOOST_CHECK_EQUAL(g->value->key_id, k.key_id);
  }
  BOOST_CHECK_EQUAL(store->calls.size(), 1u);
}

BOOST_FIXTURE_TEST_CASE(eager_key_is_ready_before_the_first_get, key_fixture) {
  config.eager_key = true;
  auto km = spawn();
  run();
  BOOST_CHECK_EQUAL(keys->creates, 1);
  auto got = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(keys->creates, 1);
  BOOST_CHECK_EQUAL(stats->snapshot().counters["msiv2_cache_hits_total{artifact=\"binding_key\"}"],
                    1u);
}

BOOST_FIXTURE_TEST_CASE(eager_key_is_not_asked_for_with_v2_disabled, key_fixture) {
  config.eager_key = true;
  config.v2_enabled = false;
  auto store = std::make_shared<deferred_key_store>();
  spawn(store);
  run();
  BOOST_CHECK(store->calls.empty());
}

BOOST_FIXTURE_TEST_CASE(a_failed_eager_key_is_not_fatal_and_the_first_get_retries, key_fixture) {
  config.eager_key = true;
  auto store = std::make_shared<deferred_key_store>();
  auto km = spawn(store);
  run();
  BOOST_REQUIRE_EQUAL(store->calls.size(), 1u);
  store->calls[0].done(fail("no entropy yet"));
  run();
  auto got = request<key_ref>(km, caf::get_atom::value);
  run();
  BOOST_REQUIRE_EQUAL(store->calls.size(), 2u);
  BOOST_CHECK_EQUAL(store->calls[1].what, "create");
  auto k = fresh_key();
  store->calls[1].done(k);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->key_id, k.key_id);
}

BOOST_AUTO_TEST_CASE(software_key_store_makes_a_proven_key_on_its_worker_thread) {
  software_key_store store;
  auto call = [&](auto start) {
    auto p = std::make_shared<std::promise<std::pair<result<key_ref>, std::thread::id>>>();
    auto f = p->get_future();
    start([p](result<key_ref> k) { p->set_value({std::move(k), std::this_thread::get_id()}); });
    BOOST_REQUIRE(f.wait_for(60s) == std::future_status::ready);
    return f.get();
  };
  auto [first, worker] =
    call([&](auto done) { store.load_or_create(std::move(done)); });
  BOOST_REQUIRE(first);
  BOOST_CHECK(worker != std::this_thread::get_id());
  BOOST_CHECK_EQUAL(first->key_id.size(), 64u);
  BOOST_CHECK(platform::prove_key_signs(first->key->get()));
  BOOST_CHECK_EQUAL(*platform::key_id(first->key->get()), first->key_id);
  BOOST_CHECK_EQUAL(*platform::public_key_der(first->key->get()), first->spki_der);

  auto [again, w2] = call([&](auto done) { store.load_or_create(std::move(done)); });
  BOOST_REQUIRE(again);
  BOOST_CHECK_EQUAL(again->key_id, first->key_id);
  BOOST_CHECK(w2 == worker);

  auto [stale, w3] = call([&](auto done) { store.rotate("not-current", std::move(done)); });
  BOOST_REQUIRE(stale);
  BOOST_CHECK_EQUAL(stale->key_id, first->key_id);

  auto [rotated, w4] = call([&](auto done) { store.rotate(first->key_id, std::move(done)); });
  BOOST_REQUIRE(rotated);
  BOOST_CHECK_NE(rotated->key_id, first->key_id);
}

BOOST_AUTO_TEST_CASE(software_key_store_is_safe_from_many_threads) {
  auto store = std::make_shared<software_key_store>();
  std::mutex mtx;
  std::set<std::string> ids;
  std::vector<std::future<void>> done;
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    auto p = std::make_shared<std::promise<void>>();
    done.push_back(p->get_future());
    callers.emplace_back([&, p] {
      store->load_or_create([&, p](result<key_ref> k) {
        if (k) {
          std::lock_guard<std::mutex> g(mtx);
          ids.insert(k->key_id);
        }
        p->set_value();
      });
    });
  }
  for (auto& t : callers)
    t.join();
  for (auto& f : done)
    BOOST_REQUIRE(f.wait_for(60s) == std::future_status::ready);
  BOOST_CHECK_EQUAL(ids.size(), 1u);
  // Calls made before destruction are still answered.
  auto p = std::make_shared<std::promise<bool>>();
  auto last = p->get_future();
  store->rotate(*ids.begin(), [p](result<key_ref> k) { p->set_value(k.ok()); });
  store.reset();
  BOOST_REQUIRE(last.wait_for(1s) == std::future_status::ready);
  BOOST_CHECK(last.get());
}

BOOST_AUTO_TEST_SUITE_END()
