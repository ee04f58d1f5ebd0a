// A small RGB canvas, a built-in bitmap font, and PNG output through libpng.
//
// Owns the pixels of the pictures (pictures.h draws on a Canvas) and the one way they leave
// the program: write_png, atomic like the checkpoints (a temporary file in the same folder,
// then rename), so a failed or interrupted write never leaves a partial PNG behind.
// Coordinates: x to the right, y downwards, (0, 0) the top-left pixel; every drawing call
// clips to the canvas, so callers may draw partly outside it.
// Text: a 5 x 9 bitmap font (7 rows above the baseline, 2 for descenders) defined as data in
// png.cpp, drawn at an integer scale; a character the font lacks is drawn as a hollow box.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cuvae {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
  bool operator!=(const Rgb& o) const { return !(*this == o); }
};

constexpr Rgb kBlack{0, 0, 0};
constexpr Rgb kWhite{255, 255, 255};

class Canvas {
 public:
  // width, height in 1..kMaxCanvasSide.
  Canvas(int width, int height, Rgb background = kWhite);

  int width() const { return width_; }
  int height() const { return height_; }
  Rgb at(int x, int y) const;                                     // Error outside the canvas
  const std::vector<uint8_t>& pixels() const { return pixels_; }  // (height, width, 3) RGB

  void fill(Rgb c);
  void set(int x, int y, Rgb c);  // ignored outside the canvas
  void fill_rect(int x, int y, int w, int h, Rgb c);
  void hline(int x0, int x1, int y, Rgb c);  // inclusive ends, either order
  void vline(int x, int y0, int y1, Rgb c);
  void frame(int x, int y, int w, int h, Rgb c);  // 1-pixel outline of the rectangle
  // A filled disc of the given radius (radius 0: one pixel) centred on (cx, cy).
  void disc(int cx, int cy, int radius, Rgb c);
  // A grayscale image of w x h values in [0, 1] (row-major), each value v drawn as a
  // scale x scale block of gray round(255 v) with its top-left corner at (x, y). Values
  // outside [0, 1] are clamped; NaN draws as 0.
  void blit_gray(int x, int y, const float* values, int w, int h, int scale = 1);

 private:
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

constexpr int kMaxCanvasSide = 1 << 15;

// The gray level blit_gray writes for a value: round(255 v), v clamped to [0, 1], NaN -> 0.
uint8_t gray_level(float v);

// ---- text --------------------------------------------------------------------------------
constexpr int kGlyphCols = 5;     // glyph width in font pixels
constexpr int kGlyphRows = 9;     // glyph height: 7 above the baseline, 2 below
constexpr int kGlyphAscent = 7;   // rows above (and on) the baseline: capitals and digits
constexpr int kGlyphAdvance = 6;  // horizontal step from one character to the next

// The characters the font defines (besides the space, which draws nothing).
const std::string& font_characters();
bool font_has(char c);

// Size in pixels of a line of text at `scale`: advance * chars - 1 gap; kGlyphRows high.
int text_width(const std::string& text, int scale);
inline int text_height(int scale) {
  return kGlyphRows * scale;
}

// Draws one line of text with its top-left corner at (x, y).
void draw_text(Canvas& canvas, int x, int y, const std::string& text, Rgb color, int scale);
// The same text turned 90 degrees counter-clockwise (reading upwards, as a y-axis name);
// (x, y) is the bottom-left corner of the turned text: it occupies x .. x + text_height - 1
// and y - text_width + 1 .. y.
void draw_text_up(Canvas& canvas, int x, int y, const std::string& text, Rgb color, int scale);

// ---- PNG ---------------------------------------------------------------------------------
// Writes an 8-bit RGB PNG atomically: `path`.tmp.<pid> in the same folder, then rename. Any
// failure removes the temporary file and throws InputError naming `path`.
void write_png(const std::string& path, const Canvas& canvas);

}  // namespace cuvae
