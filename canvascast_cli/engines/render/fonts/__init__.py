"""Caption fonts: the font that draws each character, chosen and checked before rendering.

Left to itself, libass draws a character the caption font lacks with a fallback that its
fontconfig picks among the fonts *fontconfig* knows — never a file in the private
``fontsdir`` a render hands it (those are used only when the script names them), and
never a colour-bitmap font such as Noto Color Emoji (libass draws outlines only). A
character no such font has becomes an empty box, and nothing says so. So canvascast
chooses instead, while the inputs are resolved:

1. Each caption word is cut into clusters (a base character with its combining marks, an
   emoji with its modifiers and joiners), and each cluster goes to the first font of a
   chain that has all of it: the style's fonts in order (files, or family names: the
   bundled DejaVu Sans, else an installed family), the bundled DejaVu Sans Bold, then the
   installed fonts. Whitespace and invisible format characters need no glyph.
2. Clusters no font has are reported with their words and code points (exit 2), unless
   the render allows them (``--allow-missing-glyphs``): then they are listed and left to
   libass, which draws boxes.
3. The render puts every chosen font's file in the ``fontsdir`` and switches to it in the
   ASS text (``{\\fn<full name>}``, or the PostScript name of a CFF font: the names libass
   matches to exactly one face), so what was checked is what libass draws, whatever the
   ffmpeg's own fontconfig can see.

One job per module (import them directly; this package imports nothing, and fontTools
only when a font file is read):

- ``clusters``: caption text cut into clusters; which characters need a glyph.
- ``coverage``: a face's code points, as ranges.
- ``faces``: a font file's faces (names libass matches, coverage, drawable), read with
  fontTools; the bundled face.
- ``discovery``: the installed fonts (``fc-match -a``, or the font folders, cached).
- ``plan``: the face for each cluster, the ASS runs, the characters no font has.
- ``messages``: the problems and the warning about characters no font has.
- ``hints``: the Debian/Ubuntu packages that have them.
"""
