// Reference page: claims the order named in the page query (?order=NO), or all of ?orders=A,B
// with one wx.addCard, shows the outcome and then the ticket.
const { createClaimClient } = require("../../claim-logic");

const API_BASE = "https://tickets.example.com"; // your cardpipe api
const APPID = "wxYOURMINIPROGRAM";

Page({
  data: { orders: "", status: "idle", message: "" },

  onLoad(query) {
    this.client = createClaimClient({ wx, apiBase: API_BASE, appid: APPID });
    this.orderNos = (query.orders || query.order || "").split(",").filter(Boolean);
    this.setData({ orders: this.orderNos.join(", ") });
  },

  async onClaim() {
    this.setData({ status: "working", message: "" });
    try {
      const outcome =
        this.orderNos.length > 1
          ? await this.client.claimOrders(this.orderNos)
          : await this.client.claimOrder(this.orderNos[0]);
      const messages = {
        claimed: "Your ticket is in your WeChat card holder.",
        done: "This order's tickets are already in your card holder.",
        cancelled: "Cancelled. Tap again to add your ticket.",
        failed: "WeChat could not add the ticket. Tap again to retry.",
      };
      this.setData({ status: outcome.status, message: messages[outcome.status] });
      if (outcome.status === "claimed") this.showTicket();
    } catch (error) {
      this.setData({ status: "error", message: error.message });
    }
  },

  /** Open the (first) order's ticket; best effort, as it is in the card holder either way. */
  showTicket() {
    this.client.openOrder(this.orderNos[0]).catch(() => {});
  },
});
