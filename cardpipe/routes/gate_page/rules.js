"use strict";
// The decision at the door, the same rules as cardpipe/services/checkin/rules.py: the test suite
// replays one set of vectors (tests/venue/rule_vectors.json) against both.
const CardpipeRules = (() => {
  const REFUSED_STATE = { revoked: "revoked", deleted: "deleted" };
  const PRESENTABLE = new Set(["claimed", "redeemed"]);

  function localDay(at, timezone) {
    const parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit",
    }).formatToParts(at);
    const part = (type) => parts.find((p) => p.type === type).value;
    return `${part("year")}-${part("month")}-${part("day")}`;
  }

  function entriesOn(history, day) {
    return history.day === day ? history.day_entries : 0;
  }

  function decide(rules, state, history, direction, at, insideNow, ticketClass) {
    if (REFUSED_STATE[state]) return REFUSED_STATE[state];
    if (!PRESENTABLE.has(state)) return "not_claimed";
    if (rules.ticket_classes != null && !rules.ticket_classes.includes(ticketClass)) return "not_on_list";
    if (direction === "exit") return history.inside ? "ok" : "not_inside";
    if ((rules.window_start && at < new Date(rules.window_start)) ||
        (rules.window_end && at > new Date(rules.window_end))) return "outside_window";
    if ((rules.policy || "single") === "single" && (state === "redeemed" || history.entries)) return "already_redeemed";
    if (rules.entry_after_exit_only && history.inside) return "already_inside";
    if (rules.max_entries != null && history.entries >= rules.max_entries) return "limit_reached";
    if (rules.max_per_day != null &&
        entriesOn(history, localDay(at, rules.timezone || "Asia/Shanghai")) >= rules.max_per_day) return "day_limit_reached";
    if (rules.capacity != null && !history.inside && (insideNow || 0) >= rules.capacity) return "capacity_full";
    return "ok";
  }

  function after(rules, history, direction, at) {
    if (direction === "exit") return { ...history, inside: false };
    const day = localDay(at, rules.timezone || "Asia/Shanghai");
    return { entries: history.entries + 1, day, day_entries: entriesOn(history, day) + 1, inside: true };
  }

  return { decide, after, localDay };
})();
