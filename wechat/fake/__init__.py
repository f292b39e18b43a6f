"""A fake of api.weixin.qq.com for tests, the demo and benchmarks (protocol page §10).

It is a real HTTP server: the WeChat endpoints cardpipe calls, a simulated ``wx.login`` and
``wx.addCard``, event pushes to the official account's server URL, and a control API under
``/__fake__/`` for registering accounts, injecting faults and reading statistics.
"""

from wechat.fake.control_client import FakeWeChatControl
from wechat.fake.server import FakeWeChatServer

__all__ = ["FakeWeChatControl", "FakeWeChatServer"]
