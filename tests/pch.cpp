// The translation unit that lris_test_pch's precompiled header is made for (tests/CMakeLists.txt).
