// A tiny PNG encoder (RGB, 8 bit, no filtering) for test images, with no dependencies.
import { deflateSync } from 'node:zlib'

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

const crc32 = (bytes) => {
  let c = 0xffffffff
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

const chunk = (type, data) => {
  const out = Buffer.alloc(12 + data.length)
  out.writeUInt32BE(data.length, 0)
  out.write(type, 4, 'latin1')
  data.copy(out, 8)
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length)
  return out
}

/** Encodes `pixel(x, y) -> [r, g, b]` as a PNG of `width` x `height`. */
export const encodePng = (width, height, pixel) => {
  const raw = Buffer.alloc((width * 3 + 1) * height)
  let offset = 0
  for (let y = 0; y < height; y++) {
    raw[offset++] = 0 // filter: none
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixel(x, y)
      raw[offset++] = r
      raw[offset++] = g
      raw[offset++] = b
    }
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8 // bit depth
  header[9] = 2 // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw, { level: 1 })),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

/**
 * A colourful test picture: a diagonal gradient of two hues with soft circles, plus a little deterministic
 * noise (`seed`) so every picture has different bytes and does not compress to nothing.
 */
export const testPicture = (width, height, hue, seed) => {
  let state = seed >>> 0 || 1
  const noise = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) % 24
  }
  const colour = (h, l) => {
    const a = Math.min(l, 1 - l)
    const f = (n) => {
      const k = (n + h / 30) % 12
      return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))))
    }
    return [f(0), f(8), f(4)]
  }
  const circles = [
    [0.3, 0.35, 0.22],
    [0.7, 0.6, 0.28],
    [0.55, 0.2, 0.12],
  ]
  return encodePng(width, height, (x, y) => {
    const u = x / width
    const v = y / height
    let light = 0.35 + 0.3 * (u + v) * 0.5
    for (const [cx, cy, r] of circles) {
      const d = Math.hypot(u - cx, (v - cy) * (height / width))
      if (d < r) light += 0.18 * (1 - d / r)
    }
    const [r, g, b] = colour((hue + 60 * u) % 360, Math.min(light, 0.92))
    const n = noise()
    return [Math.min(255, r + n), Math.min(255, g + n), Math.min(255, b + n)]
  })
}
