//! Folded weights against TF-semantics and PyTorch-semantics reference convolutions.

use super::*;

#[test]
fn folded_weights_match_tf_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sp = specs(&mut rng);
    // One BN whose beta is a single broadcast float_val.
    let c = sp[2].cout();
    sp[2].p[1] = vec![0.25; c];
    let g = build_graph(&sp, "SAME");
    let dir = test_dir("fold");
    let pb = write_pb(&dir, &g);
    let out = dir.join("sub/out.safetensors");
    let r = convert_graph_file(&pb, &out, false).unwrap();
    assert_eq!(r.n_convs, sp.len());
    assert_eq!(r.n_bn, 3);
    assert_eq!(r.n_bias_add, 2);

    let bytes = std::fs::read(&out).unwrap();
    // Deterministic: a second conversion gives the same bytes.
    let out2 = dir.join("again.safetensors");
    convert_graph_file(&pb, &out2, false).unwrap();
    assert!(
        std::fs::read(&out2).unwrap() == bytes,
        "output is not deterministic"
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * sp.len());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["format"], "pedcache-ssdlite-v1");
    assert_eq!(md["converter"], "pedcache convert-tf");
    assert_eq!(md["bn_epsilon"], "0.001");
    let want_sha: String = Sha256::digest(std::fs::read(&pb).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(md["source_sha256"], want_sha);

    let (h, w) = (7, 6);
    for s in &sp {
        let x = rng.vec(h * w * s.cin, -1.0, 1.0); // NHWC
        let (want, oh, ow) = tf_reference(s, &x, h, w);
        let key = s.scope.replace('/', ".");
        let wt = st.tensor(&format!("{key}.weight")).unwrap();
        let bt = st.tensor(&format!("{key}.bias")).unwrap();
        let to_f32 = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let (wv, bv) = (to_f32(wt.data()), to_f32(bt.data()));
        let cout = s.cout();
        let expect_shape = if s.depthwise {
            vec![cout, 1, s.k, s.k]
        } else {
            vec![cout, s.cin, s.k, s.k]
        };
        assert_eq!(wt.shape(), expect_shape.as_slice(), "{key}");
        assert_eq!(bt.shape(), &[cout], "{key}");
        let mut xc = vec![0f32; x.len()]; // NCHW
        for yy in 0..h {
            for xx in 0..w {
                for c in 0..s.cin {
                    xc[(c * h + yy) * w + xx] = x[(yy * w + xx) * s.cin + c];
                }
            }
        }
        let groups = if s.depthwise { s.cin } else { 1 };
        let (got, goh, gow) = nchw_conv(&xc, s.cin, h, w, &wv, wt.shape(), &bv, groups, s.stride);
        assert_eq!((goh, gow), (oh, ow));
        let mut max = 0f64;
        for o in 0..cout {
            for yy in 0..oh {
                for xx in 0..ow {
                    let a = got[(o * oh + yy) * ow + xx];
                    let b = want[(yy * ow + xx) * cout + o];
                    max = max.max((a - b).abs());
                }
            }
        }
        assert!(max < 1e-5, "{key}: max abs diff {max}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
