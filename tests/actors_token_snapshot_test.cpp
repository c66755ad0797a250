// token_snapshot: the published view of token_service's cache, read without a lock. Plain
// threads only (no CAF scheduler), so the suite runs under TSan (label "threaded"): readers
// race a writer that evicts and republishes, with a bounded number of rounds.

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "actors/token_snapshot.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t now0 = 1'700'000'000'000;

token_request request_for(const std::string& resource,
                          managed_identity who = managed_identity::system(),
                          token_type type = token_type::mtls_pop) {
  token_request r;
  r.identity = std::move(who);
  r.resource = resource;
  r.type = type;
  r.timeout = 5s;
  return r;
}

published_token_ptr token_for(const std::string& resource, const std::string& access,
                              std::int64_t renew_at = now0 + 60'000,
                              managed_identity who = managed_identity::system(),
                              token_type type = token_type::mtls_pop,
                              binding_strength binding = binding_strength::bearer) {
  auto t = std::make_shared<published_token>();
  t->binding = binding;
  t->identity = std::move(who);
  t->resource = resource;
  t->type = type;
  t->result.access_token = access;
  t->result.type = type;
  t->result.source = token_source::cache;
  t->renew_at_ms = renew_at;
  t->hash = token_snapshot::hash_of(t->identity, t->resource, t->type);
  return t;
}

std::string resource_n(int n) {
  return "https://r" + std::to_string(n) + ".example.com";
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_token_snapshot_test)

BOOST_AUTO_TEST_CASE(nothing_is_visible_until_commit_publishes_it) {
  token_snapshot s;
  s.put(token_for("https://vault.azure.net", "tok-1"));
  BOOST_CHECK(!s.find(request_for("https://vault.azure.net"), now0));
  BOOST_CHECK_EQUAL(s.version(), 0u);
  s.commit();
  BOOST_CHECK_EQUAL(s.version(), 1u);
  auto got = s.find(request_for("https://vault.azure.net"), now0);
  BOOST_REQUIRE(got);
  BOOST_CHECK_EQUAL(got->access_token, "tok-1");
  BOOST_CHECK(got->source == token_source::cache);
  BOOST_CHECK_EQUAL(s.hits(), 1u);
  s.commit(); // nothing staged: no new version
  BOOST_CHECK_EQUAL(s.version(), 1u);
}

BOOST_AUTO_TEST_CASE(lookup_keys_like_token_service_identity_resource_type_default_suffix) {
  token_snapshot s;
  auto ua = managed_identity::by_client_id("11111111-2222-3333-4444-555555555555");
  s.put(token_for("https://vault.azure.net", "system-pop"));
  s.put(token_for("https://vault.azure.net", "ua-pop", now0 + 60'000, ua));
  s.put(token_for("https://vault.azure.net", "system-bearer", now0 + 60'000,
                  managed_identity::system(), token_type::bearer));
  s.commit();
  BOOST_CHECK_EQUAL(s.find(request_for("https://vault.azure.net/.default"), now0)->access_token,
                    "system-pop");
  BOOST_CHECK_EQUAL(s.find(request_for("https://vault.azure.net", ua), now0)->access_token,
                    "ua-pop");
  BOOST_CHECK_EQUAL(s.find(request_for("https://vault.azure.net", managed_identity::system(),
                                       token_type::bearer),
                           now0)
                      ->access_token,
                    "system-bearer");
  BOOST_CHECK(!s.find(request_for("https://vault.azure.net",
                                  managed_identity::by_object_id(ua.id)),
                      now0));
  BOOST_CHECK(!s.find(request_for("https://vault.azure.net/"), now0));
  BOOST_CHECK(!s.find(request_for("https://management.azure.com"), now0));
}

BOOST_AUTO_TEST_CASE(claims_force_refresh_and_bad_timeouts_are_never_served) {
  token_snapshot s;
  s.put(token_for("https://vault.azure.net", "tok"));
  s.commit();
  auto r = request_for("https://vault.azure.net");
  r.claims = R"({"access_token":{"nbf":{"essential":true,"value":"1"}}})";
  BOOST_CHECK(!s.find(r, now0));
  r = request_for("https://vault.azure.net");
  r.force_refresh = true;
  BOOST_CHECK(!s.find(r, now0));
  r = request_for("https://vault.azure.net");
  r.timeout = 0ms;
  BOOST_CHECK(!s.find(r, now0));
  BOOST_CHECK_EQUAL(s.hits(), 0u);
}

BOOST_AUTO_TEST_CASE(a_token_at_or_past_its_refresh_time_is_left_to_token_service) {
  token_snapshot s;
  s.put(token_for("https://vault.azure.net", "tok", now0 + 1000));
  s.commit();
  BOOST_CHECK(s.find(request_for("https://vault.azure.net"), now0 + 999));
  BOOST_CHECK(!s.find(request_for("https://vault.azure.net"), now0 + 1000));
  BOOST_CHECK(!s.find(request_for("https://vault.azure.net"), now0 + 3'600'000));
}

BOOST_AUTO_TEST_CASE(a_hit_marks_the_shared_token_used_and_only_moves_forward) {
  token_snapshot s;
  auto t = token_for("https://vault.azure.net", "tok");
  s.put(t);
  s.commit();
  BOOST_REQUIRE(s.find(request_for("https://vault.azure.net"), now0 + 5));
  BOOST_CHECK_EQUAL(t->last_used_ms.load(), now0 + 5);
  BOOST_REQUIRE(s.find(request_for("https://vault.azure.net"), now0 + 2));
  BOOST_CHECK_EQUAL(t->last_used_ms.load(), now0 + 5);
}

BOOST_AUTO_TEST_CASE(put_replaces_erase_removes_clear_empties_each_in_one_publication) {
  token_snapshot s;
  s.put(token_for("https://a.example.com", "a-1"));
  auto b1 = token_for("https://b.example.com", "b-1");
  s.put(b1);
  s.commit();
  s.put(token_for("https://a.example.com", "a-2"));
  s.erase(*b1);
  s.erase(*token_for("https://absent.example.com", "never-put"));
  // Staged, not published: readers still see the first view.
  BOOST_CHECK_EQUAL(s.find(request_for("https://a.example.com"), now0)->access_token, "a-1");
  BOOST_CHECK(s.find(request_for("https://b.example.com"), now0));
  s.commit();
  BOOST_CHECK_EQUAL(s.version(), 2u);
  BOOST_CHECK_EQUAL(s.size(), 1u);
  BOOST_CHECK_EQUAL(s.find(request_for("https://a.example.com"), now0)->access_token, "a-2");
  BOOST_CHECK(!s.find(request_for("https://b.example.com"), now0));
  s.clear();
  s.commit();
  BOOST_CHECK_EQUAL(s.size(), 0u);
  BOOST_CHECK(!s.find(request_for("https://a.example.com"), now0));
}

BOOST_AUTO_TEST_CASE(erasing_a_replaced_token_leaves_its_successor_published) {
  token_snapshot s;
  auto old = token_for("https://vault.azure.net", "old");
  s.put(old);
  s.commit();
  s.put(token_for("https://vault.azure.net", "new"));
  s.commit();
  s.erase(*old); // e.g. the entry of a certificate already replaced
  s.commit();
  BOOST_CHECK_EQUAL(s.size(), 1u);
  auto got = s.find(request_for("https://vault.azure.net"), now0);
  BOOST_REQUIRE(got);
  BOOST_CHECK_EQUAL(got->access_token, "new");
}

BOOST_AUTO_TEST_CASE(a_request_asking_a_stronger_binding_than_the_token_has_misses) {
  token_snapshot s;
  s.put(token_for("https://vault.azure.net", "pop", now0 + 60'000, managed_identity::system(),
                  token_type::mtls_pop, binding_strength::software_key));
  s.put(token_for("https://vault.azure.net", "bearer", now0 + 60'000, managed_identity::system(),
                  token_type::bearer));
  s.commit();
  auto r = request_for("https://vault.azure.net");
  r.min_binding = binding_strength::software_key;
  BOOST_CHECK(s.find(r, now0));
  r.min_binding = binding_strength::hardware_key;
  BOOST_CHECK(!s.find(r, now0));
  r.min_binding = binding_strength::attested_hardware_key;
  BOOST_CHECK(!s.find(r, now0));
  auto b = request_for("https://vault.azure.net", managed_identity::system(), token_type::bearer);
  BOOST_CHECK(s.find(b, now0));
  b.min_binding = binding_strength::software_key;
  BOOST_CHECK(!s.find(b, now0));
  BOOST_CHECK_EQUAL(s.hits(), 2u);
}

BOOST_AUTO_TEST_CASE(ten_thousand_tokens_published_one_by_one_are_all_found_and_erased) {
  token_snapshot s;
  const int n = 10'000;
  std::vector<published_token_ptr> put;
  for (int i = 0; i < n; ++i) {
    put.push_back(token_for(resource_n(i), "tok-" + std::to_string(i)));
    s.put(put.back());
    s.commit();
  }
  BOOST_CHECK_EQUAL(s.size(), static_cast<std::size_t>(n));
  BOOST_CHECK_EQUAL(s.version(), static_cast<std::uint64_t>(n));
  int found = 0;
  for (int i = 0; i < n; ++i) {
    auto t = s.find(request_for(resource_n(i)), now0);
    found += t && t->access_token == "tok-" + std::to_string(i);
  }
  BOOST_CHECK_EQUAL(found, n);
  for (int i = 0; i < n; i += 2)
    s.erase(*put[i]);
  s.commit();
  int left = 0;
  for (int i = 0; i < n; ++i)
    left += s.find(request_for(resource_n(i)), now0).has_value();
  BOOST_CHECK_EQUAL(left, n / 2);
  BOOST_CHECK(!s.find(request_for(resource_n(0)), now0));
  BOOST_CHECK(s.find(request_for(resource_n(1)), now0));
}

BOOST_AUTO_TEST_CASE(two_snapshots_read_from_one_thread_never_mix_their_tokens) {
  token_snapshot a, b;
  a.put(token_for("https://vault.azure.net", "from-a"));
  a.commit();
  b.put(token_for("https://vault.azure.net", "from-b"));
  b.commit();
  for (int i = 0; i < 3; ++i) {
    BOOST_CHECK_EQUAL(a.find(request_for("https://vault.azure.net"), now0)->access_token, "from-a");
    BOOST_CHECK_EQUAL(b.find(request_for("https://vault.azure.net"), now0)->access_token, "from-b");
  }
}

// The property of the header's memory-ordering argument: once the writer's commit of an
// eviction returned (and the reader is synchronized with that, here through `evicted`), no
// reader gets the evicted token or an older one. The writer evicts generation g of a key,
// commits, announces g, then publishes generation g + 1; readers check every token they get
// against the newest eviction announced before their lookup.
BOOST_AUTO_TEST_CASE(readers_racing_evictions_never_get_an_evicted_token) {
  token_snapshot s;
  constexpr int keys = 8;
  constexpr int rounds = 4000;   // evictions in all (bounded by count, not time)
  constexpr int reads = 20'000;  // per reader
  constexpr int readers = 3;
  std::vector<std::atomic<int>> evicted(keys);
  for (auto& e : evicted)
    e.store(-1);
  auto access = [](int key, int gen) { return std::to_string(key) + ":" + std::to_string(gen); };
  std::vector<published_token_ptr> live;
  for (int k = 0; k < keys; ++k) {
    live.push_back(token_for(resource_n(k), access(k, 0)));
    s.put(live.back());
  }
  s.commit();

  std::atomic<int> stale{0};
  std::atomic<long> hits{0};
  std::vector<std::thread> ts;
  for (int r = 0; r < readers; ++r)
    ts.emplace_back([&, r] {
      long mine = 0;
      for (int i = 0; i < reads; ++i) {
        int k = (i + r) % keys;
        int gone = evicted[k].load(std::memory_order_acquire);
        auto t = s.find(request_for(resource_n(k)), now0);
        if (!t)
          continue;
        ++mine;
        auto colon = t->access_token.find(':');
        int key = std::stoi(t->access_token.substr(0, colon));
        int gen = std::stoi(t->access_token.substr(colon + 1));
        if (key != k || gen <= gone)
          ++stale;
      }
      hits += mine;
    });
  std::thread writer([&] {
    std::vector<int> gen(keys, 0);
    for (int i = 0; i < rounds; ++i) {
      int k = i % keys;
      s.erase(*live[k]);
      s.commit();
      evicted[k].store(gen[k], std::memory_order_release);
      live[k] = token_for(resource_n(k), access(k, ++gen[k]));
      s.put(live[k]);
      s.commit();
    }
  });
  writer.join();
  for (auto& t : ts)
    t.join();
  BOOST_CHECK_EQUAL(stale.load(), 0);
  // After the writer finished, every key holds its last generation, on any thread.
  for (int k = 0; k < keys; ++k) {
    auto t = s.find(request_for(resource_n(k)), now0);
    BOOST_REQUIRE(t);
    BOOST_CHECK_EQUAL(t->access_token, access(k, rounds / keys));
  }
  BOOST_TEST_MESSAGE("reader hits during the race: " << hits.load() << " of " << readers * reads);
  BOOST_CHECK_EQUAL(s.hits(), static_cast<std::uint64_t>(hits.load()) + keys);
}

BOOST_AUTO_TEST_SUITE_END()
