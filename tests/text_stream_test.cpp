#include "engine/text_stream.h"

#include <gtest/gtest.h>

using hearth::engine::CompleteUtf8Prefix;
using hearth::engine::TextStream;

TEST(TextStream, PassesTextThroughWithoutStops) {
  TextStream s({});
  EXPECT_EQ(s.Push("Hello"), "Hello");
  EXPECT_EQ(s.Push(", world"), ", world");
  EXPECT_EQ(s.Flush(), "");
}

TEST(TextStream, StopStringSplitAcrossPiecesIsNeverEmitted) {
  TextStream s({"</end>"});
  std::string out;
  for (const char* piece : {"abc<", "/e", "nd", ">tail"}) out += s.Push(piece);
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out, "abc");
  EXPECT_EQ(s.matched_stop(), "</end>");
  EXPECT_EQ(s.Push("more"), "");
  EXPECT_EQ(s.Flush(), "");
}

TEST(TextStream, HeldBackPrefixIsReleasedWhenItCannotBecomeAStop) {
  TextStream s({"STOP"});
  EXPECT_EQ(s.Push("xx ST"), "xx ");
  EXPECT_EQ(s.Push("ART"), "START");
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.Push("S"), "");
  EXPECT_EQ(s.Flush(), "S");
}

TEST(TextStream, EarliestOfSeveralStopsWins) {
  TextStream s({"world", "lo"});
  EXPECT_EQ(s.Push("hello world"), "hel");
  EXPECT_EQ(s.matched_stop(), "lo");
}

TEST(TextStream, IncompleteUtf8IsHeldUntilComplete) {
  TextStream s({});
  std::string euro = "\xE2\x82\xAC";  // U+20AC
  EXPECT_EQ(s.Push(euro.substr(0, 1)), "");
  EXPECT_EQ(s.Push(euro.substr(1, 1)), "");
  EXPECT_EQ(s.Push(euro.substr(2, 1)), euro);
}

TEST(TextStream, FlushDropsATrailingIncompleteSequence) {
  TextStream s({});
  EXPECT_EQ(s.Push("ok\xF0\x9F"), "ok");
  EXPECT_EQ(s.Flush(), "");
}

TEST(CompleteUtf8Prefix, HandlesAsciiMultibyteAndInvalid) {
  EXPECT_EQ(CompleteUtf8Prefix("abc"), 3u);
  EXPECT_EQ(CompleteUtf8Prefix("a\xC3"), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(CompleteUtf8Prefix("\x80\x80\x80\x80"), 4u);  // stray continuation bytes pass
}
