// throttle on a fake clock: hysteresis between the thresholds, each decision by priority and
// activity, the options that turn actions off, the piece size, counts, and bad thresholds.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <chrono>

#include <lris/error.hpp>
#include <lris/sched/throttle.hpp>

using lris::sched::priority;
using lris::sched::throttle;
using lris::sched::throttle_action;
using lris::sched::throttle_options;
using lris::test::what_contains;
using namespace std::chrono_literals;

namespace {
throttle_options on() {
  throttle_options o;
  o.enabled = true;
  return o;
}
}  // namespace

TEST_CASE("throttle: off by default, deciding nothing but counting") {
  throttle t;
  t.observe(1.0, 0ms);
  t.note_active(priority::critical, 0ms);
  CHECK(t.decide(priority::background, 0ms) == throttle_action::none);
  CHECK(t.counts()[throttle_action::none] == 1);
}

TEST_CASE("throttle: congestion starts at high and ends only under low") {
  throttle t(on());  // high 0.90, low 0.70
  t.observe(0.5, 0ms);
  CHECK_FALSE(t.congested());
  t.observe(0.95, 1ms);
  CHECK(t.congested());
  t.observe(0.80, 2ms);  // between the thresholds: stays congested
  CHECK(t.congested());
  t.observe(0.69, 3ms);
  CHECK_FALSE(t.congested());
  t.observe(0.85, 4ms);  // between the thresholds: stays clear
  CHECK_FALSE(t.congested());
  t.observe(0.90, 5ms);
  CHECK(t.congested());
  CHECK(t.counts().congested_episodes == 2);
}

TEST_CASE("throttle: lower priorities give way to active higher ones while congested") {
  throttle_options o = on();
  o.window = 20ms;
  o.fallback = true;
  throttle t(o);
  t.observe(1.0, 0ms);
  // Nothing else active: nobody to give way to.
  CHECK(t.decide(priority::background, 0ms) == throttle_action::none);
  CHECK(t.decide(priority::normal, 0ms) == throttle_action::none);

  t.note_active(priority::critical, 1ms);
  CHECK(t.decide(priority::background, 2ms) == throttle_action::delay_background);
  CHECK(t.holds_back_background(2ms));
  CHECK(t.decide(priority::normal, 2ms) == throttle_action::smaller_chunks);
  CHECK(t.decide(priority::critical, 2ms) == throttle_action::none);  // no other path
  t.note_active(priority::background, 2ms);
  CHECK(t.decide(priority::critical, 3ms, true) == throttle_action::fallback_path);

  // Past the window (20 ms) the critical work counts as gone.
  CHECK(t.decide(priority::background, 22ms) == throttle_action::none);
  CHECK_FALSE(t.holds_back_background(22ms));
  CHECK(t.decide(priority::normal, 22ms) == throttle_action::none);

  // Normal work alone makes background work wait, but not other normal work.
  t.note_active(priority::normal, 30ms);
  CHECK(t.decide(priority::background, 31ms) == throttle_action::delay_background);
  CHECK(t.decide(priority::normal, 31ms) == throttle_action::none);

  // Clear again: everything goes as planned.
  t.observe(0.1, 32ms);
  CHECK(t.decide(priority::background, 32ms) == throttle_action::none);

  const auto& c = t.counts();
  CHECK(c[throttle_action::delay_background] == 2);
  CHECK(c[throttle_action::smaller_chunks] == 1);
  CHECK(c[throttle_action::fallback_path] == 1);
  CHECK(c[throttle_action::none] == 7);
}

TEST_CASE("throttle: options turn each action off") {
  throttle_options o = on();
  o.delay_background = false;
  o.fallback = true;
  throttle no_delay(o);
  no_delay.observe(1.0, 0ms);
  no_delay.note_active(priority::critical, 0ms);
  CHECK(no_delay.decide(priority::background, 1ms) == throttle_action::smaller_chunks);

  o.smaller_chunks = false;
  throttle neither(o);
  neither.observe(1.0, 0ms);
  neither.note_active(priority::critical, 0ms);
  CHECK(neither.decide(priority::background, 1ms) == throttle_action::none);
  CHECK(neither.decide(priority::normal, 1ms) == throttle_action::none);

  throttle_options off;
  off.enabled = false;
  throttle disabled(off);
  disabled.observe(1.0, 0ms);
  disabled.note_active(priority::critical, 0ms);
  disabled.note_active(priority::background, 0ms);
  CHECK(disabled.decide(priority::background, 1ms) == throttle_action::none);
  CHECK(disabled.decide(priority::critical, 1ms, true) == throttle_action::none);
  CHECK(disabled.counts()[throttle_action::none] == 2);

  throttle_options no_fallback = on();
  no_fallback.fallback = false;
  throttle nf(no_fallback);
  nf.observe(1.0, 0ms);
  nf.note_active(priority::background, 0ms);
  CHECK(nf.decide(priority::critical, 1ms, true) == throttle_action::none);

  throttle_options window = on();  // 1 ms by default
  window.window = 5ms;
  throttle w(window);
  w.observe(1.0, 0ms);
  w.note_active(priority::critical, 0ms);
  CHECK(w.decide(priority::background, 5ms) == throttle_action::delay_background);
  CHECK(w.decide(priority::background, 6ms) == throttle_action::none);
}

TEST_CASE("throttle: smaller chunks are a quarter, not under the floor, never larger") {
  throttle t(on());  // floor 1 MiB
  CHECK(t.smaller(16u << 20) == 4u << 20);
  CHECK(t.smaller(2u << 20) == 1u << 20);
  CHECK(t.smaller(512u << 10) == 512u << 10);
}

TEST_CASE("throttle: thresholds out of order are refused, naming them") {
  throttle_options o;
  o.low = 0.95;
  o.high = 0.9;
  REQUIRE_THROWS_MATCHES(throttle(o), lris::invalid_argument, what_contains("low 0.95 and high 0.9"));
  o.low = -0.1;
  o.high = 0.9;
  REQUIRE_THROWS_AS(throttle(o), lris::invalid_argument);
}
