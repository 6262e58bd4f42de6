#include <lris/fanout/route.hpp>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::fanout {

device_links device_links::uniform(std::vector<std::string> names, link_kind kind) {
  device_links l;
  const std::size_t n = names.size();
  l.names = std::move(names);
  l.kinds.assign(n * n, kind);
  l.detail.assign(n * n, std::string());
  return l;
}

void device_links::set(std::size_t a, std::size_t b, link_kind k, std::string how) {
  LRIS_EXPECTS(a < size() && b < size(), "device_links::set: devices {} and {} of {}", a, b,
               size());
  kinds[a * size() + b] = k;
  if (detail.size() != kinds.size()) detail.resize(kinds.size());
  detail[a * size() + b] = std::move(how);
}

bool device_links::every_pair(link_kind k) const {
  for (std::size_t a = 0; a < size(); ++a) {
    for (std::size_t b = 0; b < size(); ++b) {
      if (a != b && at(a, b) != k) return false;
    }
  }
  return true;
}

namespace {
std::string_view kind_words(link_kind k) {
  switch (k) {
    case link_kind::unknown: return "an unknown link";
    case link_kind::none: return "no peer access";
    case link_kind::pcie: return "PCIe";
    case link_kind::nvlink: return "NVLink";
  }
  return "?";
}
}  // namespace

route_choice choose_route(const device_links& links) {
  const std::size_t n = links.size();
  LRIS_EXPECTS(links.kinds.size() == n * n, "choose_route: {} links for {} devices",
               links.kinds.size(), n);
  if (n <= 1) return {fan_path::dma, "one device: a plain load"};
  for (std::size_t a = 0; a < n; ++a) {
    for (std::size_t b = 0; b < n; ++b) {
      if (a == b || links.at(a, b) == link_kind::nvlink) continue;
      const std::string& how = links.detail.size() == n * n ? links.detail[a * n + b] : "";
      return {fan_path::dma,
              fmt::format("{} reaches {} by {}{}: each device takes its bytes from the pinned "
                          "slots over its own link", links.names[a], links.names[b],
                          how.empty() ? std::string(kind_words(links.at(a, b))) : how,
                          how.empty() && links.at(a, b) == link_kind::unknown
                              ? " (nothing tells)"
                              : "")};
    }
  }
  return {fan_path::peer,
          "NVLink between every pair: each chunk crosses PCIe once, into one device in turn, "
          "and the others copy their parts from there (NCCL's broadcast only when asked for: "
          "its communicators take about half a second to make)"};
}

}  // namespace lris::fanout
